//! Waiting for a job's task: status checks on the run's schedule, and the 1080p
//! or 4K upgrade.

use super::*;
use crate::runner::spend::{Kind, Source, failed_task_cost};

impl JobRunner {
    /// The URLs of the video to keep from a task that succeeded: for an extend, the
    /// stitched whole (`fullResultUrls`), never the new segment alone; `None` when
    /// there is none yet.
    pub(super) fn kept_urls(
        &self,
        result_urls: Vec<String>,
        full_result_urls: Vec<String>,
    ) -> Option<Vec<String>> {
        let urls = if self.job.extend.is_some() {
            full_result_urls
        } else {
            result_urls
        };
        (!urls.is_empty()).then_some(urls)
    }

    /// Checks the task until it ends, at the times the run's schedule picks and
    /// within the run's pace of checks (see [`Polls`]). `submitted` is when this run
    /// submitted it; a task of an earlier run counts from its recorded submission.
    pub(super) async fn poll(
        &mut self,
        task_id: &str,
        submitted: Option<Instant>,
    ) -> Result<(), JobEnd> {
        let settings = self.shared.settings.clone();
        if settings.no_wait {
            return Err(JobEnd::Unfinished);
        }
        let shared = self.shared.clone();
        let kind = polls::kind(&self.job);
        let deadline = Instant::now() + settings.task_timeout;
        let mut not_ready_since: Option<Instant> = None;
        let start = submitted.unwrap_or_else(|| {
            let age = self.since_submission().unwrap_or(Duration::ZERO);
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        });
        // When the last check found the task generating, from `start`.
        let mut last_generating: Option<Duration> = None;
        loop {
            let wait = shared.polls.wait(&kind, start.elapsed());
            self.sleep_or_stop(wait).await?;
            if Instant::now() >= deadline {
                tracing::warn!(task = %task_id, "still running after --task-timeout; left submitted, the next run polls it again");
                return Err(JobEnd::Unfinished);
            }
            let (place, epoch) = shared.polls.reserve();
            self.sleep_or_stop(place.saturating_duration_since(Instant::now()))
                .await?;
            let turn = shared.polls.turn().await;
            shared.polls.until_free().await;
            let permit = tokio::select! {
                biased;
                () = shared.stop.waiting().cancelled() => None,
                p = shared.polls.slot() => p,
            };
            let Some(permit) = permit else {
                return Err(JobEnd::Unfinished);
            };
            shared.polls.send().await;
            drop(turn);
            let checked = start.elapsed();
            let answer = self.shared.client.record_info(task_id).await;
            drop(permit);
            let refused = matches!(&answer, Err(e) if e.code == Some(429));
            shared.polls.answered(refused, epoch);
            match answer {
                Ok(TaskState::Generating) => {
                    if submitted.is_some() {
                        shared.polls.generating(&kind, checked);
                    }
                    last_generating = Some(checked);
                }
                Ok(TaskState::Succeeded {
                    result_urls,
                    full_result_urls,
                }) => {
                    let Some(urls) = self.kept_urls(result_urls, full_result_urls) else {
                        // An extend's stitched video is the one to keep: its segment
                        // alone would lose what was paid for. Ask again.
                        tracing::debug!(task = %task_id, "extend succeeded without its stitched video yet");
                        continue;
                    };
                    if submitted.is_some() {
                        shared.polls.finished(&kind, last_generating, checked);
                    }
                    self.record.video_urls = urls;
                    self.record.finished_at = Some(now());
                    self.save(State::Succeeded).await?;
                    tracing::debug!(task = %task_id, "generated");
                    return Ok(());
                }
                Ok(TaskState::Failed {
                    flag,
                    error_code,
                    error_message,
                }) => {
                    let message = error_message
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| format!("generation failed (successFlag {flag})"));
                    let kind = ErrorKind::of_refusal(&message, ErrorKind::GenerationFailed);
                    self.record.set_failure(kind, error_code, message);
                    self.record.finished_at = Some(now());
                    tracing::warn!(task = %task_id, code = self.record.error_code, error = self.record.error_message.as_deref().unwrap_or_default(), "generation failed");
                    self.refund_failed_task(submitted.is_some());
                    self.save(State::Failed).await?;
                    return Err(JobEnd::Failed);
                }
                // Not ready yet: early after submission, or (a task polled long after,
                // by a later run) for a while from the first such answer.
                Err(e)
                    if e.is_record_not_ready()
                        && (self
                            .since_submission()
                            .is_none_or(|d| d < settings.record_null_grace)
                            || not_ready_since.get_or_insert_with(Instant::now).elapsed()
                                < settings.record_null_grace) => {}
                Err(e) => match e.class {
                    ErrorClass::Auth => {
                        self.shared.halt(StopReason::Auth(e.message.clone()));
                        return Err(JobEnd::Stopped);
                    }
                    ErrorClass::Failed => {
                        self.set_error(&e, ErrorKind::StatusCheck);
                        self.record.finished_at = Some(now());
                        tracing::warn!(task = %task_id, code = e.code, error = %e.message, "status check failed");
                        self.save(State::Failed).await?;
                        return Err(JobEnd::Failed);
                    }
                    // A status check changes nothing on the service: ask again at the
                    // next interval, within the task timeout.
                    ErrorClass::Retryable | ErrorClass::InDoubt | ErrorClass::Credits => {
                        self.retry_event("record-info", &e);
                    }
                },
            }
        }
    }

    /// The service reported the job's task failed: the record counts it 0, as the
    /// service documents failed tasks free (see [`failed_task_cost`]); a task made
    /// this run is handed to the spend, which counts it billed again when the
    /// balance shows it was.
    fn refund_failed_task(&mut self, made_this_run: bool) {
        let spend = &self.shared.spend;
        let kind = Kind::of(&*self.job);
        // A task of an earlier run: a job that superseded no task has only this
        // one counted (a refused send gives its credits back); otherwise what its
        // send added is not known here, and its kind's price now (and its
        // upgrade's) is the best account of it.
        let before = self.before_task.unwrap_or_else(|| {
            if self.record.superseded_tasks.is_empty() {
                return 0.0;
            }
            let upgrade = self
                .job
                .upgrade
                .map_or(0.0, |u| spend.price(Kind::upgrade(u)).billed);
            self.record.credits - spend.price(kind).billed - upgrade
        });
        let (credits, refunded) = failed_task_cost(self.record.credits, before);
        self.record.credits = credits;
        self.record.credits_source = Source::Refunded.as_str().to_owned();
        if made_this_run {
            spend.failed(kind, self.job.index(), refunded);
        } else {
            spend.earlier_failed(refunded);
        }
    }

    /// Asks for the 1080p or 4K file until it is ready. The service charges a 4K
    /// upgrade once, however often it is asked, so asking again after a kill is safe.
    pub(super) async fn upgrade(&mut self, task_id: &str) -> Result<(), JobEnd> {
        let Some(kind) = self.job.upgrade else {
            return Ok(());
        };
        let billed_as = Kind::upgrade(kind);
        if self.record.upgrade_not_made() {
            // Refused for want of credits by an earlier run, which gave its price
            // back: it counts against the limits again now that it is asked.
            let price = self.shared.spend.price(billed_as);
            if let Err(past) = self.shared.reserve(price.reserve).await {
                self.shared.halt(StopReason::Budget(format!(
                    "the {kind} upgrade of job {:?} ({} credits) would take {past}",
                    self.job.id,
                    Credits(price.reserve)
                )));
                return Err(JobEnd::NotStarted);
            }
            self.record.credits += price.billed;
            self.upgrade_reserved = Some(price);
        }
        // A 4K upgrade is charged by its first accepted call; this run's calls
        // after that one are not.
        let mut charged = false;
        let settings = self.shared.settings.clone();
        let deadline = Instant::now() + settings.task_timeout;
        let mut first = true;
        // When the upgrade endpoint first said the record is not ready.
        let mut not_ready_since: Option<Instant> = None;
        loop {
            if !first {
                let wait = settings.poll_interval.mul_f64(0.8 + 0.4 * self.rng.f64());
                self.sleep_or_stop(wait).await?;
                if Instant::now() >= deadline {
                    tracing::warn!(task = %task_id, "{kind} file not ready after --task-timeout; the next run asks again");
                    return Err(JobEnd::Unfinished);
                }
            }
            first = false;
            let shared = self.shared.clone();
            let Some(permit) = slot(&shared).await else {
                return Err(JobEnd::Unfinished);
            };
            let entry = shared.spend.enter(&shared.client, billed_as).await;
            let price = shared.spend.price(billed_as);
            let answer = match kind {
                Upgrade::Hd1080 => {
                    self.shared
                        .client
                        .get_1080p(task_id, 0)
                        .await
                        .map(|a| match a {
                            Upgrade1080::Ready(url) => Some(vec![url]),
                            Upgrade1080::Processing(_) => None,
                        })
                }
                Upgrade::Uhd4k => self
                    .shared
                    .client
                    .get_4k(task_id, 0)
                    .await
                    .map(|a| match a {
                        Upgrade4k::Ready(urls) => Some(urls),
                        Upgrade4k::Processing(_) => None,
                    }),
            };
            drop(permit);
            let billed = !charged
                && match (kind, &answer) {
                    (Upgrade::Hd1080, Ok(Some(urls))) => !urls.is_empty(),
                    (Upgrade::Hd1080, _) => false,
                    (Upgrade::Uhd4k, a) => a.is_ok(),
                };
            charged |= billed;
            if let Some(measured) = entry.done(&shared.client, billed).await {
                self.measured(billed_as, price, measured).await;
                self.upgrade_reserved = None;
            }
            match answer {
                Err(e)
                    if e.is_record_not_ready()
                        && not_ready_since.get_or_insert_with(Instant::now).elapsed()
                            < settings.record_null_grace =>
                {
                    tracing::debug!(task = %task_id, error = %e, "{kind} record not ready yet");
                }
                Ok(Some(urls)) if !urls.is_empty() => {
                    if self.record.upgrade_not_made() {
                        self.record.clear_failure();
                    }
                    shared.spend.made(billed_as);
                    if let Some(reserved) = self.upgrade_reserved.take() {
                        // Reserved before its kind's price was learned.
                        self.settle(reserved, shared.spend.price(billed_as)).await;
                    }
                    self.record.upgrade_urls = urls;
                    self.save(State::Succeeded).await?;
                    tracing::debug!(task = %task_id, "{kind} file ready");
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => match e.class {
                    ErrorClass::Auth => {
                        self.shared.halt(StopReason::Auth(e.message.clone()));
                        return Err(JobEnd::Stopped);
                    }
                    ErrorClass::Credits => {
                        // The base video is paid for and kept; the upgrade is not
                        // made, its price given back, and the next run (after a
                        // top-up) asks for it again, generating nothing.
                        tracing::warn!(task = %task_id, code = e.code, error = %e.message, "{kind} upgrade not made: credits exhausted; keeping the base video");
                        let reserved = self.upgrade_reserved.take().unwrap_or(price);
                        self.shared.release(reserved.reserve);
                        self.record.credits = (self.record.credits - reserved.billed).max(0.0);
                        self.record.set_failure(
                            ErrorKind::Credits,
                            e.code,
                            format!("{kind} {UPGRADE_NOT_MADE}: {}", e.message),
                        );
                        shared.spend.upgrade_not_made();
                        shared.halt(StopReason::Credits(e.to_string()));
                        self.save(State::Succeeded).await?;
                        return Ok(());
                    }
                    ErrorClass::Failed => {
                        // The base video is paid for and kept: record why there is
                        // no upgrade, and download what there is.
                        tracing::warn!(task = %task_id, code = e.code, error = %e.message, "{kind} upgrade failed; keeping the base video");
                        self.record.set_failure(
                            ErrorKind::Upgrade,
                            e.code,
                            format!("{kind} {UPGRADE_FAILED}: {}", e.message),
                        );
                        self.save(State::Succeeded).await?;
                        return Ok(());
                    }
                    ErrorClass::Retryable | ErrorClass::InDoubt => {
                        self.retry_event(
                            match kind {
                                Upgrade::Hd1080 => "get-1080p-video",
                                Upgrade::Uhd4k => "get-4k-video",
                            },
                            &e,
                        );
                    }
                },
            }
        }
    }
}
