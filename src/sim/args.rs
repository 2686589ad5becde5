//! `veo-batch simulate`: flags that set up the simulator.

use clap::Args;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port to listen on, on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
}
