//! `mq acl`: the ACL configuration of every broker group (or one, `-b`): list accounts, set or
//! delete an account, turn enforcement on or off, set the global whitelist.
//!
//! Each change is one admin HTTP `POST /acl` on the group's leader, which replicates it through
//! Raft, so every member enforces it. Admin HTTP rather than RocketMQ's remoting ACL codes:
//! membership and offset resets already go that way with the shared admin types and client,
//! the admin token guards it (and it works before any ACL account exists), and the remoting
//! port, open to every client, gains no way to change who may do what. Finding the leaders
//! uses remoting (GET_BROKER_RUNTIME_INFO), so under ACL `mq` signs with `--access-key` /
//! `--secret-key` (a member's bootstrap admin works before any account exists).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use raftmq_protocol::acl::{Account, AclChange, AclView, AddressPattern, Perm};
use serde::Serialize;

use crate::context::Ctx;
use crate::output::{Table, print_json};

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// List the accounts (never their secret keys) and the switch of each broker group.
    List {
        /// Only this broker group.
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Create an account or replace it whole.
    SetAccount {
        /// The account's access key. (Its own clap id: `access_key` is mq's global signing
        /// option, and a shared id made mq sign with the account being created.)
        #[arg(id = "account_access_key", value_name = "ACCESS_KEY")]
        access_key: String,
        /// The account's secret key (at least 6 characters).
        #[arg(
            id = "account_secret_key",
            long = "account-secret-key",
            env = "RAFTMQ_ACL_ACCOUNT_SECRET_KEY",
            hide_env_values = true
        )]
        secret_key: String,
        /// May create and delete topics and groups (and, with no --topic/--group, use all).
        #[arg(long)]
        admin: bool,
        /// For topics not listed with --topic: DENY, PUB, SUB or PUB|SUB.
        #[arg(long, default_value = "DENY")]
        default_topic_perm: Perm,
        /// For groups not listed with --group.
        #[arg(long, default_value = "DENY")]
        default_group_perm: Perm,
        /// A topic's permission, `TOPIC=PERM` (repeat the flag).
        #[arg(long = "topic", value_parser = parse_grant)]
        topics: Vec<(String, Perm)>,
        /// A consumer group's permission, `GROUP=PERM` (repeat the flag).
        #[arg(long = "group", value_parser = parse_grant)]
        groups: Vec<(String, Perm)>,
        /// Addresses from which this account passes unsigned (RocketMQ's whiteRemoteAddress).
        #[arg(long = "white-address")]
        white_addresses: Vec<AddressPattern>,
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Delete an account.
    DeleteAccount {
        #[arg(id = "account_access_key", value_name = "ACCESS_KEY")]
        access_key: String,
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Enforce the ACL on every member of the group(s).
    Enable {
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Stop enforcing (members started with --acl keep enforcing).
    Disable {
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Replace the global whitelist: requests from these addresses pass without credentials.
    Whitelist {
        addresses: Vec<AddressPattern>,
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
}

fn parse_grant(text: &str) -> Result<(String, Perm), String> {
    let (name, perm) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PERM"))?;
    if name.is_empty() {
        return Err(format!("{text:?} names nothing"));
    }
    Ok((name.to_string(), perm.parse().map_err(|e| format!("{e}"))?))
}

#[derive(Serialize, Debug)]
struct Changed {
    broker_name: String,
    log_index: u64,
}

pub async fn run(ctx: &Ctx, command: AclCommand) -> anyhow::Result<ExitCode> {
    let (change, only) = match command {
        AclCommand::List { broker_name } => return list(ctx, broker_name.as_deref()).await,
        AclCommand::SetAccount {
            access_key,
            secret_key,
            admin,
            default_topic_perm,
            default_group_perm,
            topics,
            groups,
            white_addresses,
            broker_name,
        } => (
            AclChange::UpsertAccount(Account {
                access_key,
                secret_key,
                admin,
                default_topic_perm,
                default_group_perm,
                topic_perms: topics.into_iter().collect(),
                group_perms: groups.into_iter().collect(),
                white_remote_addresses: white_addresses,
            }),
            broker_name,
        ),
        AclCommand::DeleteAccount {
            access_key,
            broker_name,
        } => (AclChange::DeleteAccount(access_key), broker_name),
        AclCommand::Enable { broker_name } => (AclChange::SetEnabled(true), broker_name),
        AclCommand::Disable { broker_name } => (AclChange::SetEnabled(false), broker_name),
        AclCommand::Whitelist {
            addresses,
            broker_name,
        } => (AclChange::SetGlobalWhitelist(addresses), broker_name),
    };
    change.validate()?;
    let groups = ctx.discover(only.as_deref()).await?;
    if groups.is_empty() {
        bail!("the NameServer lists no broker group");
    }
    let mut changed = Vec::new();
    for group in &groups {
        let leader = group.require_leader()?;
        let answer = ctx
            .admin
            .change_acl(&leader.admin_addr, &change)
            .await
            .with_context(|| format!("changing the ACL of {}", group.broker_name))?;
        changed.push(Changed {
            broker_name: group.broker_name.clone(),
            log_index: answer.log_index,
        });
    }
    if ctx.json {
        print_json(&changed)?;
    } else {
        let mut table = Table::new(&["BROKER", "APPLIED AT"]);
        for row in &changed {
            table.row(vec![row.broker_name.clone(), row.log_index.to_string()]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let groups = ctx.discover(only).await?;
    let mut views: BTreeMap<String, AclView> = BTreeMap::new();
    for group in &groups {
        let member = group
            .leader()
            .or_else(|| group.members.iter().find_map(|m| m.info.as_ref().ok()))
            .ok_or_else(|| anyhow!("broker group {} has no reachable member", group.broker_name))?;
        let view = ctx
            .admin
            .acl(&member.admin_addr)
            .await
            .with_context(|| format!("reading the ACL of {}", group.broker_name))?;
        views.insert(group.broker_name.clone(), view);
    }
    if ctx.json {
        print_json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "BROKER",
        "ENABLED",
        "ACCESS KEY",
        "ADMIN",
        "TOPICS",
        "GROUPS",
        "WHITELIST",
    ]);
    for (name, view) in &views {
        let enabled = format!(
            "{}{}",
            view.enabled,
            if view.enforced_here && !view.enabled {
                " (--acl)"
            } else {
                ""
            }
        );
        if view.accounts.is_empty() {
            table.row(vec![
                name.clone(),
                enabled.clone(),
                "-".into(),
                "".into(),
                "".into(),
                "".into(),
                view.global_white_addresses.join(","),
            ]);
        }
        for account in &view.accounts {
            let grants = |default: Perm, listed: &BTreeMap<String, Perm>| {
                let mut parts: Vec<String> = listed
                    .iter()
                    .map(|(name, perm)| format!("{name}={perm}"))
                    .collect();
                parts.push(format!("*={default}"));
                parts.join(",")
            };
            table.row(vec![
                name.clone(),
                enabled.clone(),
                account.access_key.clone(),
                account.admin.to_string(),
                grants(account.default_topic_perm, &account.topic_perms),
                grants(account.default_group_perm, &account.group_perms),
                account.white_remote_addresses.join(","),
            ]);
        }
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
