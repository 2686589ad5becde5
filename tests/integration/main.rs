//! The integration tests: one binary, one module per area. Servers bind
//! 127.0.0.1:0; nothing leaves the machine.

mod accounts;
mod bucket;
mod bucket_runs;
mod client;
mod confined;
mod current_api;
mod disk;
mod docs;
mod extend;
mod harness;
mod hostile;
mod moto;
mod notify;
mod operator;
mod ops;
mod polls;
mod records;
mod report;
mod run;
mod shape;
mod sim;
mod simulate;
mod spend;
mod spend_failed;
mod storm;
mod transport;
mod uploads;
mod validate;
