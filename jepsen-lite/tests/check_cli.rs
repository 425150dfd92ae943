//! `jepsen-lite check` end to end: a history recorded through the public recorder API, checked
//! by the binary, with the exit status and the printed summary.

use std::path::Path;
use std::process::Command;

use jepsen_lite::history::{
    Call, DrainMsg, DrainOp, Event, HistoryWriter, NemesisOp, NemesisPhase, PollOp, PolledMsg,
    RunOp, SendOp,
};
use jepsen_lite::nemesis::{Fault, KillTarget};

const BIN: &str = env!("CARGO_BIN_EXE_jepsen-lite");

fn send(value: &str, at: Option<(u32, u64)>) -> Call {
    Call::Send(SendOp {
        topic: "jl".into(),
        key: Some("k".into()),
        queue: at.map(|(q, _)| q),
        value: value.into(),
        offset: at.map(|(_, o)| o),
        retried_after_unknown: false,
    })
}

/// Records a small run; when `lose` is set, the drain misses an acknowledged message that a
/// poll already got past (a lost write, and unseen).
async fn record(path: &Path, lose: bool) {
    let (rec, writer) = HistoryWriter::create(path).unwrap();
    let run = |phase| {
        Call::Run(RunOp {
            phase,
            seed: Some(7),
            settings: serde_json::json!({"profile": "test"}),
        })
    };
    rec.record(Event::new(
        "harness",
        jepsen_lite::history::OpType::Info,
        run(NemesisPhase::Start),
    ))
    .await
    .unwrap();
    for i in 0..3u64 {
        let v = format!("c1-{i}");
        rec.record(Event::invoke("c1", send(&v, None)))
            .await
            .unwrap();
        rec.record(Event::ok("c1", send(&v, Some((0, i)))).with_node("n1"))
            .await
            .unwrap();
    }
    let kill = Fault::Kill {
        target: KillTarget::Leader,
    };
    for phase in [NemesisPhase::Start, NemesisPhase::Stop] {
        let op = Call::Nemesis(NemesisOp {
            window: 1,
            phase,
            fault: kill.clone(),
            targets: vec!["n1".into()],
            corruption: None,
        });
        rec.record(Event::invoke("nemesis", op.clone()))
            .await
            .unwrap();
        rec.record(Event::ok("nemesis", op)).await.unwrap();
    }
    rec.record(Event::invoke("c1", send("c1-3", None)))
        .await
        .unwrap();
    rec.record(Event::info(
        "c1",
        send("c1-3", None),
        "timeout after 3000 ms",
    ))
    .await
    .unwrap();
    let poll = |msgs: Vec<PolledMsg>| {
        Call::Poll(PollOp {
            consumer: "c2".into(),
            group: "g".into(),
            msgs,
            min_offsets: vec![],
        })
    };
    rec.record(Event::invoke("c2", poll(vec![]))).await.unwrap();
    let got = vec![PolledMsg {
        topic: "jl".into(),
        queue: 0,
        offset: 2,
        value: "c1-2".into(),
    }];
    rec.record(Event::ok("c2", poll(got))).await.unwrap();
    let drained: Vec<DrainMsg> = (0..3u64)
        .filter(|&i| !(lose && i == 1))
        .map(|i| DrainMsg {
            offset: i,
            value: format!("c1-{i}"),
        })
        .collect();
    for member in ["n1", "n2", "n3"] {
        let drain = |msgs| {
            Call::Drain(DrainOp {
                member: Some(member.into()),
                topic: "jl".into(),
                queue: 0,
                from: 0,
                msgs,
                min_offset: None,
            })
        };
        rec.record(Event::invoke("drainer", drain(vec![])))
            .await
            .unwrap();
        rec.record(Event::ok("drainer", drain(drained.clone())))
            .await
            .unwrap();
    }
    rec.record(Event::new(
        "harness",
        jepsen_lite::history::OpType::Info,
        run(NemesisPhase::Stop),
    ))
    .await
    .unwrap();
    writer.close().await.unwrap();
}

fn run_check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("check").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn clean_history_exits_zero_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.jsonl");
    record(&path, false).await;
    let json = dir.path().join("summary.json");
    let (code, stdout, stderr) =
        run_check(&[path.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("seed 7"), "{stdout}");
    assert!(stdout.contains("kill-leader"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["verdict"], "pass");
    assert_eq!(summary["seed"], 7);
    assert_eq!(
        summary["availability"]["windows"][0]["fault"],
        "kill-leader"
    );
}

#[tokio::test]
async fn lost_write_exits_one_and_names_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.jsonl");
    record(&path, true).await;
    let (code, stdout, _) = run_check(&[path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 1, "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let lost = summary["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lost_write")
        .unwrap();
    assert_eq!(lost["verdict"], "fail");
    assert_eq!(lost["examples"][0]["value"], "c1-1");
}

#[test]
fn unreadable_history_exits_two_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"index\":0}\n").unwrap();
    let (code, _, stderr) = run_check(&[path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 1"), "{stderr}");
    let (code, _, stderr) = run_check(&[dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot open"), "{stderr}");
}

#[test]
fn schedule_command_replays_a_seed() {
    let print = |seed: &str| {
        let out = Command::new(BIN)
            .args(["schedule", "--profile", "short", "--seed", seed])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let a = print("7");
    assert_eq!(a, print("7"));
    assert_ne!(a, print("8"));
    assert_eq!(
        a.matches("scenario ").count(),
        jepsen_lite::schedule::Profile::Short.scenarios().len(),
        "{a}"
    );
}
