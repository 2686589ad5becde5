//! veo-batch: a batch pipeline runner for the kie.ai Veo 3.1 video API.
//!
//! `main.rs` parses the command line and calls [`commands::main`]; everything else lives
//! here so that tests and benches drive the whole program in process.

pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cost;
pub mod durable;
pub mod exit;
pub mod manifest;
pub mod notify;
pub mod paths;
pub mod progress;
pub mod report;
pub mod request;
pub mod retry;
pub mod runner;
pub mod sim;
pub mod store;
pub mod summary;
pub mod units;
