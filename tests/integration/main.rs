//! The integration tests: one binary, one module per area. Servers bind
//! 127.0.0.1:0; nothing leaves the machine.

mod client;
mod current_api;
mod disk;
mod harness;
mod hostile;
mod ops;
mod records;
mod run;
mod sim;
mod storm;
mod uploads;
mod validate;
