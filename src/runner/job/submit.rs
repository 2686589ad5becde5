//! Sending a job: its place among the sends, the budget, its local images, the
//! generate (or extend) call and what its answer means.

use super::*;
use crate::runner::spend::{Kind, Price, Source};

/// A submission's reserved place among the sends, with its request slot. Given
/// up without a send (the run stops, the budget is spent, the row cannot be
/// written), the place counts as a send at that moment, so that the places after
/// it never wait for it and never leave too early.
struct Reserved<'a> {
    shared: &'a Shared,
    place: Reservation,
    permit: Option<SemaphorePermit<'a>>,
}

impl<'a> Reserved<'a> {
    /// The request leaves now: hands over the request slot, and the place, dropped
    /// here, records the send.
    pub(super) fn leave(mut self) -> Option<SemaphorePermit<'a>> {
        self.permit.take()
    }
}

impl Drop for Reserved<'_> {
    /// Records the send (or the place given up) now.
    fn drop(&mut self) {
        self.shared.sent(self.place.number);
    }
}

/// Waits for the pause after a 429, a request slot and a place among the sends
/// (see [`Pace`]), then for the moment to start writing the row. One submitter
/// at a time reserves, so places follow the order jobs asked for them; a slot
/// awaited after the place would let sends bunch up and overfill the service's
/// window. The one submitter that waits for a place holds a request slot, so
/// polls and downloads keep the others.
async fn ready_to_submit(shared: &Shared) -> Option<Reserved<'_>> {
    let wait = async {
        let turn = shared.submit_turn.lock().await;
        while let Some(until) = shared.paused_until().filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
        let permit = shared.permits.acquire().await.ok()?;
        let reserved = loop {
            let left = shared.place_left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if let Some(place) = shared.pace().and_then(|mut p| p.reserve()) {
                break Reserved {
                    shared,
                    place,
                    permit: Some(permit),
                };
            }
            left.await;
        };
        drop(turn);
        loop {
            if let Some(at) = shared.pace().and_then(|p| p.sync_from(reserved.place.slot)) {
                tokio::time::sleep_until(at).await;
            }
            // A 429 may have come back meanwhile, to a request sent before this one.
            match shared.paused_until().filter(|u| *u > Instant::now()) {
                Some(until) => tokio::time::sleep_until(until).await,
                None => break,
            }
        }
        Some(reserved)
    };
    tokio::select! {
        biased;
        () = shared.stop.submitting().cancelled() => None,
        reserved = wait => reserved.filter(|_| !shared.stop.submitting().is_cancelled()),
    }
}

impl JobRunner {
    pub(super) async fn submit(&mut self) -> Result<String, JobEnd> {
        // An extend names the task of the video it continues, which its record
        // holds (set when its parent's video was made).
        let parent_task = self.record.parent_task_id.clone().unwrap_or_default();
        let mut body = self.job.body(&parent_task);
        let extend = self.job.extend.is_some();
        let mut delays = self.shared.settings.retry.nominal_delays();
        let mut uploaded_again = false;
        loop {
            let shared = self.shared.clone();
            // Local images get their URLs now, just before the send (and again
            // before each retry), not when the run starts.
            let mut lease = self.lease_images(&mut body).await?;
            let Some(reserved) = ready_to_submit(&shared).await else {
                return Err(JobEnd::NotStarted);
            };
            if lease.as_ref().is_some_and(|l| !l.fresh()) {
                // The wait outlived an upload: renew it, keeping the place.
                lease = self.lease_images(&mut body).await?;
            }
            // The first send of a kind whose price is to be learned goes alone; the
            // price is asked after, so a send that waited behind it reserves the
            // learned price (see `spend`).
            let kind = Kind::of(&*self.job);
            let entry = shared.spend.enter(&shared.client, kind).await;
            // A job the table has no price for is never sent under a limit (the run
            // refuses to start), so 0 here counts only where nothing is capped.
            let generation = shared.spend.price(kind);
            let upgrade = self
                .job
                .upgrade
                .map(|u| shared.spend.price(Kind::upgrade(u)));
            let cost = generation.reserve + upgrade.map_or(0.0, |p| p.reserve);
            let billed = generation.billed + upgrade.map_or(0.0, |p| p.billed);
            if let Err(past) = shared.reserve(cost).await {
                shared.halt(StopReason::Budget(format!(
                    "job {:?} ({} credits{}) would take {past}",
                    self.job.id,
                    Credits(cost),
                    generation.why_reserved(kind)
                )));
                return Err(JobEnd::NotStarted);
            }
            self.upgrade_reserved = upgrade;
            self.record.attempts += 1;
            self.before_task = Some(self.record.credits);
            self.record.credits += billed;
            self.record.credits_source = generation.source.as_str().to_owned();
            self.record.task_id = None;
            // The key this call goes with owns whatever task it makes: recorded
            // before the send, so that an in-doubt row names it too.
            self.record.account = self.shared.client.account().to_owned();
            self.record.key_id = self.shared.client.key_id().to_string();
            let syncing = Instant::now();
            self.save(State::Submitting).await?;
            if let Some(mut pace) = shared.pace() {
                pace.synced(syncing.elapsed());
            }
            if let Some(slot) = reserved.place.slot {
                tokio::time::sleep_until(slot).await;
            }
            let permit = reserved.leave();
            let sent = if extend {
                self.shared.client.extend(&body).await
            } else {
                self.shared.client.generate(&body).await
            };
            drop(permit);
            if sent.is_ok() {
                shared.spend.made(kind);
            }
            if let Some(price) = entry.done(&shared.client, sent.is_ok()).await {
                self.measured(kind, generation, price).await;
            }
            let e = match sent {
                Ok(task_id) => {
                    self.record.task_id = Some(task_id.clone());
                    self.record.submitted_at = Some(now());
                    self.record.clear_failure();
                    self.save(State::Submitted).await?;
                    tracing::debug!(task = %task_id, "submitted");
                    return Ok(task_id);
                }
                Err(e) => e,
            };
            let kind = match e.class {
                ErrorClass::Failed | ErrorClass::Auth => {
                    ErrorKind::of_refusal(&e.message, ErrorKind::Refused)
                }
                ErrorClass::Credits => ErrorKind::Credits,
                ErrorClass::InDoubt => ErrorKind::NoAnswer,
                ErrorClass::Retryable => ErrorKind::GaveUp,
            };
            self.set_error(&e, kind);
            if let Some(lease) = lease.filter(|_| e.code == Some(451) && !uploaded_again) {
                // The service could not fetch an uploaded image (gone before its
                // time): no task was made; upload again and send once more.
                uploaded_again = true;
                shared.release(cost);
                self.record.credits = (self.record.credits - billed).max(0.0);
                shared.uploads.forget(&lease).await;
                self.save(State::Pending).await?;
                tracing::info!("the service could not fetch an uploaded image; uploading it again");
                continue;
            }
            if matches!(
                e.class,
                ErrorClass::Retryable | ErrorClass::Failed | ErrorClass::Auth | ErrorClass::Credits
            ) {
                // Refused: no task, no charge, and no task for a key to own.
                self.record.account.clear();
                self.record.key_id.clear();
                shared.release(cost);
                self.record.credits = (self.record.credits - billed).max(0.0);
            }
            match e.class {
                ErrorClass::InDoubt => {
                    tracing::warn!(code = e.code, error = %e.message, "in doubt: the request was sent and no answer came; it is not sent again");
                    self.save(State::InDoubt).await?;
                    return Err(JobEnd::InDoubt);
                }
                ErrorClass::Failed => {
                    tracing::warn!(code = e.code, error = %e.message, "failed");
                    self.record.finished_at = Some(now());
                    self.save(State::Failed).await?;
                    return Err(JobEnd::Failed);
                }
                ErrorClass::Auth => {
                    self.save(State::Pending).await?;
                    self.shared.halt(StopReason::Auth(e.message.clone()));
                    return Err(JobEnd::Stopped);
                }
                ErrorClass::Credits => {
                    self.save(State::Pending).await?;
                    self.shared.halt(StopReason::Credits(e.to_string()));
                    return Err(JobEnd::Stopped);
                }
                ErrorClass::Retryable => {
                    // Refused without creating a task: say so, so that a kill during
                    // the wait does not leave the job looking in doubt.
                    self.save(State::Pending).await?;
                    let Some(nominal) = delays.next() else {
                        tracing::warn!(code = e.code, error = %e.message, "failed: gave up after {} attempts", self.shared.settings.retry.max_attempts);
                        self.record.error_kind = Some(ErrorKind::GaveUp);
                        self.record.error_message = Some(format!(
                            "gave up after {} attempts: {}",
                            self.shared.settings.retry.max_attempts, e.message
                        ));
                        self.record.finished_at = Some(now());
                        self.save(State::Failed).await?;
                        return Err(JobEnd::Failed);
                    };
                    let delay = self.shared.settings.retry.delay(nominal, &e, &mut self.rng);
                    if e.code == Some(429) {
                        self.shared.pause_submissions(delay);
                    }
                    // The info line below says why.
                    self.count_retry(e.code);
                    tracing::info!(
                        attempt = self.record.attempts,
                        code = e.code,
                        delay_ms = delay.as_millis() as u64,
                        "retrying {}: {e}",
                        if extend { "extend" } else { "generate" }
                    );
                    tokio::select! {
                        () = self.shared.stop.submitting().cancelled() => return Err(JobEnd::NotStarted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The task just made was the first of its kind: its measured `price` replaces
    /// the `reserved` one in the budget and the record, and a price that took the
    /// spend past a limit stops the submissions.
    pub(super) async fn measured(&mut self, kind: Kind, reserved: Price, price: f64) {
        self.shared.release(reserved.reserve - price);
        self.record.credits = (self.record.credits + price - reserved.billed).max(0.0);
        self.record.credits_source = Source::Measured.as_str().to_owned();
        if let Err(past) = self.shared.reserve(0.0).await {
            self.shared.halt(StopReason::Budget(format!(
                "the first {kind} task cost {} credits (the table said {}), which took {past}",
                Credits(price),
                Credits(reserved.billed)
            )));
        }
    }

    /// Replaces what was `reserved` for a billed call with its kind's price `now`.
    pub(super) async fn settle(&mut self, reserved: Price, now: Price) {
        self.shared.release(reserved.reserve - now.reserve);
        self.record.credits = (self.record.credits + now.billed - reserved.billed).max(0.0);
        if now.source == Source::Measured {
            self.record.credits_source = Source::Measured.as_str().to_owned();
        }
        if let Err(past) = self.shared.reserve(0.0).await {
            self.shared.halt(StopReason::Budget(format!(
                "job {:?} cost {} credits more than reserved, at its kind's learned price, which took {past}",
                self.job.id,
                Credits(now.reserve - reserved.reserve)
            )));
        }
    }

    /// URLs for the job's local images, put into `body`; `None` for a job without.
    /// A file that cannot be uploaded fails the job; a refused key stops the run.
    pub(super) async fn lease_images(
        &mut self,
        body: &mut serde_json::Value,
    ) -> Result<Option<crate::runner::uploads::Lease>, JobEnd> {
        use crate::runner::uploads::NoLease;
        if self.job.local_images.is_empty() {
            return Ok(None);
        }
        let shared = self.shared.clone();
        let run = crate::runner::uploads::Run {
            client: &shared.client,
            retry: shared.settings.retry,
            stop: shared.stop.submitting(),
            events: &shared.events,
        };
        match shared.uploads.lease(&run, &self.job, &mut self.rng).await {
            Ok(lease) => {
                for (index, url) in &lease.urls {
                    if let Some(slot) = body.get_mut("imageUrls").and_then(|u| u.get_mut(*index)) {
                        *slot = serde_json::Value::from(url.as_str());
                    }
                }
                Ok(Some(lease))
            }
            Err(NoLease::Stopped) => Err(JobEnd::NotStarted),
            Err(NoLease::Refused(r)) if r.auth => {
                shared.halt(StopReason::Auth(r.message));
                Err(JobEnd::Stopped)
            }
            Err(NoLease::Refused(r)) => {
                tracing::warn!(code = r.code, error = %r.message, "failed");
                self.record
                    .set_failure(ErrorKind::Upload, r.code, r.message);
                self.record.finished_at = Some(now());
                self.save(State::Failed).await?;
                Err(JobEnd::Failed)
            }
        }
    }
}
