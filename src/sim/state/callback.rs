//! Callbacks: the documented JSON POSTed to a task's `callBackUrl` when it ends
//! (or when its 4K video is ready), with the service's timeout and three tries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Outcome, Sim};

impl Sim {
    /// The documented callback of a generation task, at its end.
    fn task_callback_body(&self, task_id: &str) -> Option<Value> {
        let mut inner = self.lock();
        Self::settle(&mut inner, Instant::now());
        let (_, task) = self.task(&mut inner, task_id, None)?;
        let task = &*task;
        Some(match task.outcome {
            Outcome::Success => json!({
                "code": 200,
                "msg": "Veo3 video generated successfully.",
                "data": { "taskId": task_id, "info": self.info(task_id, task) },
            }),
            Outcome::Failure { code, message, .. } => json!({
                "code": code,
                "msg": message,
                "data": { "taskId": task_id, "info": null },
            }),
        })
    }

    pub(super) fn spawn_task_callback(self: &Arc<Self>, task_id: String, url: String, at: Instant) {
        self.spawn_callback(url, at, move |sim| sim.task_callback_body(&task_id));
    }

    /// POSTs `body` to `url` at `at`: three tries at most, failures ignored, as the
    /// service does. Stops with the simulator.
    pub(super) fn spawn_callback(
        self: &Arc<Self>,
        url: String,
        at: Instant,
        body: impl FnOnce(&Sim) -> Option<Value> + Send + 'static,
    ) {
        let sim = Arc::clone(self);
        tokio::spawn(async move {
            let stop = sim.stop.clone();
            tokio::select! {
                () = stop.cancelled() => {}
                () = sim.deliver(url, at, body) => {}
            }
        });
    }

    async fn deliver(&self, url: String, at: Instant, body: impl FnOnce(&Sim) -> Option<Value>) {
        tokio::time::sleep_until(at).await;
        let Some(body) = body(self) else { return };
        let timeout = self
            .config
            .scaled(self.config.callback_timeout)
            .max(Duration::from_millis(200));
        let pause = self.config.scaled(Duration::from_secs(5));
        for attempt in 1..=3 {
            let sent = self
                .http
                .post(&url)
                .timeout(timeout)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    self.lock().stats.callbacks_delivered += 1;
                    return;
                }
                Ok(r) => tracing::debug!("callback to {url} answered {}", r.status()),
                Err(e) => tracing::debug!("callback to {url} failed: {e}"),
            }
            if attempt < 3 {
                tokio::time::sleep(pause).await;
            }
        }
    }
}
