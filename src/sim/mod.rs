//! The embedded kie.ai simulator: an HTTP server that behaves like the real service
//! (paths, envelope, codes, rate limit, credits, task lifecycle, faults), so the
//! whole pipeline runs, is tested and is demonstrated without the real one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::units::Rate;

pub mod args;

/// How the simulator behaves. `Default` is the realistic service at real speed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub api_key: String,
    /// Generate calls allowed per window; `None` for no limit.
    pub rate: Option<Rate>,
    /// Generation time is drawn from this range (before time scaling).
    pub generation_time: (Duration, Duration),
    /// Every duration is multiplied by this (0.01: an hour in 36 s).
    pub time_scale: f64,
    pub credits: f64,
    pub seed: u64,
    pub request_log: Option<PathBuf>,
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(self) {}
}

/// Starts the simulator on `bind` (port 0 for any free port).
pub async fn start(config: SimConfig, bind: SocketAddr) -> anyhow::Result<SimHandle> {
    let _ = (config, bind);
    todo!()
}
