//! The run's spending limits and what its submissions have reserved. The
//! dispatcher owns the one `Budget` of a run; jobs reach it only through
//! [`reserve`](Budget::reserve) and [`release`](Budget::release), sent as events.

use crate::cost::Credits;

/// The run's spending limits and what it has spent.
#[derive(Debug)]
pub struct Budget {
    /// The batch's limit (`max_credits`), against `recorded` plus this run's spend.
    pub max: Option<f64>,
    /// Where `max` was set (`--max-credits` or the manifest's `max_credits`).
    pub max_setting: &'static str,
    /// Credits the results file records as spent by earlier runs.
    pub recorded: f64,
    /// This run's own limit (`--max-run-credits`).
    pub max_run: Option<f64>,
    /// Credits of the submissions sent (reserved before each send, given back when
    /// the service refused it without creating a task).
    pub spent: f64,
}

impl Budget {
    /// Reserves `cost`; the limit it would pass otherwise, said the way the stop
    /// message ends ("would take the batch past ...").
    pub fn reserve(&mut self, cost: f64) -> Result<(), String> {
        if let Some(max) = self.max
            && self.recorded + self.spent + cost > max + 1e-9
        {
            return Err(format!(
                "the batch past {} {} ({} credits spent on it so far, {} of them by earlier runs)",
                self.max_setting,
                Credits(max),
                Credits(self.recorded + self.spent),
                Credits(self.recorded)
            ));
        }
        if let Some(max) = self.max_run
            && self.spent + cost > max + 1e-9
        {
            return Err(format!(
                "this run past --max-run-credits {} ({} credits spent by it)",
                Credits(max),
                Credits(self.spent)
            ));
        }
        self.spent += cost;
        Ok(())
    }

    /// Gives back `cost`: the service refused the submission without a task.
    pub fn release(&mut self, cost: f64) {
        self.spent -= cost;
    }
}
