//! The client against an in-process fake NameServer and fake brokers: one test binary, one
//! module per scenario.

mod admin;
mod consumer;
mod producer;
mod support;
