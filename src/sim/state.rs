//! The simulator's state: tasks and their timelines, the credit balance, the
//! generate and poll rate windows, the seeded generator behind every random draw,
//! the counters and the request log. One mutex, never held across an await.
//!
//! Every request costs O(1) or O(log N) of the tasks held: tasks are found by id in
//! a hash map, failed tasks are refunded from a queue ordered by their end, and a
//! task created by an earlier simulator with the same seed is re-derived from its
//! id (see `ids`) the first time it is asked about.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, SimConfig, SimStats};
use crate::request::{AspectRatio, ExtendCall, GenerateRequest, Resolution, extend_fingerprint};

mod accounts;
mod callback;
mod files;
mod ids;
mod task;
#[cfg(test)]
mod tests_accounts;

pub(crate) use accounts::{Caller, MSG_KEY_CAPPED};
pub(crate) use files::file_task;
use task::{
    ASPECTS, DEFAULT_RESOLUTION, EXTEND_CODE, FAILURES, MODELS, Outcome, RESOLUTIONS, Task,
    code_of, later,
};

/// One answer in the service's envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub code: i64,
    pub msg: String,
    pub data: Value,
}

impl Answer {
    pub fn ok(data: Value) -> Answer {
        Answer {
            code: 200,
            msg: "success".into(),
            data,
        }
    }

    pub fn err(code: i64, msg: impl Into<String>) -> Answer {
        Answer {
            code,
            msg: msg.into(),
            data: Value::Null,
        }
    }
}

pub(crate) const MSG_RECORD_NULL: &str = "record is null";
pub(crate) const MSG_NO_CREDITS: &str = "The current credits are insufficient. Please top up.";
pub(crate) const MSG_1080P_PROCESSING: &str =
    "1080P is processing. It should be ready in 1-2 minutes. Please check back shortly.";
pub(crate) const MSG_4K_PROCESSING: &str = "4k is processing, please wait and try again later";
pub(crate) const MSG_4K_DONE: &str = "The video has been generated successfully";
/// What the upgrade endpoints answer (422) for a short while after a task succeeds.
pub(crate) const MSG_RECORD_BLANK: &str = "record result data is blank";
pub(crate) const MSG_IMAGE_FETCH: &str = "Failed to fetch the image";
pub(crate) const MSG_URL_WRONG: &str = "url is wrong";

/// Whether the simulated service fails to fetch this image: a host under the
/// reserved `.invalid` top-level domain, which never resolves anywhere.
fn unfetchable(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').ends_with(".invalid"))
        })
        .unwrap_or(false)
}

/// What `/files/<name>` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileState {
    Missing,
    /// The task's result URL has expired (`url_ttl`) and no fresh link was given.
    Expired,
    Ready,
}

/// What a new task is: the request, what it costs, and how its id seals its kind.
struct New<'a> {
    request: &'a GenerateRequest,
    /// What the stats count its tasks under.
    fingerprint: String,
    price: f64,
    aspect: AspectRatio,
    /// The resolution, or [`EXTEND_KIND`], for its generation time.
    resolution: &'a str,
    resolution_code: u8,
    param_json: String,
}

/// The kind an extend's generation time is looked up by (`veo3_fast:extend`).
const EXTEND_KIND: &str = "extend";
/// What extend answers for a video whose 1080p version was made (documented).
pub(crate) const MSG_NO_EXTEND_1080P: &str =
    "a video whose 1080P version has been generated cannot be extended";
/// The name ending of an extend task's stitched video (`<id>-full.mp4`).
pub(crate) const FULL_SUFFIX: &str = "-full.mp4";

/// What happened to one generate call that passed validation.
#[derive(Debug)]
pub(crate) enum Admission {
    Refused(Answer),
    DropBefore,
    Created {
        task_id: String,
        /// When its video (or its failure) is ready, on the wall clock.
        ready: SystemTime,
        drop_after: bool,
        slow: bool,
    },
}

struct Inner {
    rng: fastrand::Rng,
    /// Balances and rate windows, by account index.
    accounts: Vec<accounts::Account>,
    /// Tasks each key created, by key index (for the usage caps).
    key_used: Vec<u64>,
    /// Tasks by the value of their id.
    tasks: HashMap<u128, Task>,
    /// Failed tasks this simulator charged for, by the time their refund is due.
    refunds: BinaryHeap<Reverse<(Instant, u128)>>,
    /// Tasks created by this instance.
    created: u64,
    stats: SimStats,
}

pub(crate) struct Sim {
    pub config: SimConfig,
    pub base_url: String,
    pub started: Instant,
    pub stop: CancellationToken,
    http: reqwest::Client,
    log: Option<Mutex<File>>,
    /// The keys, their accounts and each account's id codec.
    keys: accounts::Keys,
    /// Where this instance's task counter starts (see `ids`).
    nonce: u32,
    inner: Mutex<Inner>,
    /// Files on the upload host (`super::files`).
    pub uploads: super::files::Store,
}

/// A sliding window log: true (and the call counted) when one more call at `now`
/// stays within `rate` (already scaled).
fn window_admits(window: &mut VecDeque<Instant>, count: u32, per: Duration, now: Instant) -> bool {
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= per)
    {
        window.pop_front();
    }
    if window.len() >= count as usize {
        return false;
    }
    window.push_back(now);
    true
}

/// One line of the request log.
#[derive(Debug, Serialize)]
pub(crate) struct LogLine<'a> {
    pub ts: String,
    pub endpoint: &'a str,
    pub prompt: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub task_id: Option<&'a str>,
    /// For an extend: the task whose video it continues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<&'a str>,
    /// The answer code; null when the connection was dropped instead.
    pub code: Option<i64>,
    pub task_created: bool,
    pub dropped: bool,
    /// For the call that created a task: when its video (or failure) is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
}

/// `2025-06-06 10:30:00`, the record-info time format.
pub(crate) fn wall_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

impl Sim {
    pub fn new(
        config: SimConfig,
        base_url: String,
        log: Option<File>,
        stop: CancellationToken,
    ) -> Sim {
        let keys = accounts::Keys::new(&config);
        let inner = Inner {
            rng: fastrand::Rng::with_seed(config.seed),
            accounts: accounts::Account::all(&config, &keys),
            key_used: vec![0; keys.keys.len()],
            tasks: HashMap::new(),
            refunds: BinaryHeap::new(),
            created: 0,
            stats: SimStats::default(),
        };
        // A client without a UA would be refused by a real CDN; ours is polite.
        let http = reqwest::Client::builder()
            .user_agent(concat!("veo-batch-simulator/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Sim {
            config,
            base_url,
            started: Instant::now(),
            stop,
            http,
            log: log.map(Mutex::new),
            keys,
            nonce: ids::instance_nonce(),
            inner: Mutex::new(inner),
            uploads: super::files::Store::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the simulator down with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True with probability `p`, from the seeded generator.
    pub fn draw(&self, p: f64) -> bool {
        p > 0.0 && self.lock().rng.f64() < p
    }

    fn span(&self, rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
        let (lo, hi) = (self.config.scaled(lo), self.config.scaled(hi));
        if hi <= lo {
            return lo;
        }
        let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
        let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.u64(lo_us..=hi_us))
    }

    /// How long the maintenance window has left at `now`; `None` outside it.
    pub fn maintenance_left(&self, now: Instant) -> Option<Duration> {
        let m = self.config.faults.maintenance?;
        let start = later(self.started, self.config.scaled(m.start));
        let end = later(start, self.config.scaled(m.duration));
        (now >= start && now < end).then(|| end - now)
    }

    pub fn count_request(&self, e: Endpoint) {
        let mut inner = self.lock();
        *inner.stats.requests.entry(e.name()).or_default() += 1;
        if e == Endpoint::Generate {
            inner.stats.generate_calls += 1;
        }
    }

    pub fn count_answer(&self, code: Option<i64>) {
        let mut inner = self.lock();
        match code {
            Some(code) => {
                *inner.stats.codes.entry(code).or_default() += 1;
                if code == 429 {
                    inner.stats.answered_429 += 1;
                }
            }
            None => inner.stats.dropped += 1,
        }
    }

    pub fn write_log(&self, line: &LogLine<'_>) {
        let Some(log) = &self.log else { return };
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        let mut file = log.lock().unwrap_or_else(PoisonError::into_inner);
        // Flushed per line: tests read the log right after killing a client.
        if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
            tracing::warn!("simulator failed to write the request log: {e}");
        }
    }

    /// The caller of a call with this `Authorization` header; `None`: a key the
    /// simulator does not know.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        self.keys.caller(authorization)
    }

    /// Usage cap, rate window, credits, faults and, when all pass, a new task of
    /// the caller's account.
    pub fn admit(
        self: &Arc<Self>,
        caller: Caller,
        req: &GenerateRequest,
        body: &Value,
    ) -> Admission {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(refused) = self.enter(inner, caller, now) {
            return refused;
        }
        if req.image_urls.iter().any(|u| unfetchable(u)) {
            return Admission::Refused(Answer::err(451, MSG_IMAGE_FETCH));
        }
        let resolution = req.resolution.unwrap_or_default();
        let price = self
            .config
            .prices
            .generation_of(
                req.model,
                resolution,
                req.duration.unwrap_or(crate::cost::DEFAULT_SECONDS),
            )
            .unwrap_or(0.0);
        let resolution = body
            .get("resolution")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_RESOLUTION);
        self.create(
            inner,
            caller,
            now,
            &New {
                request: req,
                fingerprint: req.fingerprint(),
                price,
                aspect: req.aspect_ratio,
                resolution,
                resolution_code: code_of(&RESOLUTIONS, &resolution),
                param_json: body.to_string(),
            },
        )
    }

    /// [`Sim::admit`] for an extend: the task it names must be this account's, done,
    /// succeeded, and without its 1080p version (a 720p video).
    pub fn admit_extend(
        self: &Arc<Self>,
        caller: Caller,
        call: &ExtendCall,
        body: &Value,
    ) -> Admission {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(refused) = self.enter(inner, caller, now) {
            return refused;
        }
        let parent = self
            .task(inner, &call.task_id, Some(caller.account))
            .map(|(_, t)| {
                let has_1080p = t.hd_charged || t.resolution != DEFAULT_RESOLUTION;
                (t.ends <= now, t.outcome, has_1080p, t.aspect)
            });
        let refusal = match parent {
            None => Some(MSG_RECORD_NULL),
            Some((false, _, _, _)) => {
                Some("the video is still being generated; extend it after it succeeds")
            }
            Some((true, Outcome::Failure { .. }, _, _)) => {
                Some("the task failed; it has no video to extend")
            }
            Some((true, Outcome::Success, true, _)) => Some(MSG_NO_EXTEND_1080P),
            Some((true, Outcome::Success, false, _)) => None,
        };
        if let Some(msg) = refusal {
            self.leave_window(inner, caller);
            return Admission::Refused(Answer::err(422, msg));
        }
        let aspect = parent.map_or(AspectRatio::Landscape, |p| p.3);
        self.create(
            inner,
            caller,
            now,
            &New {
                request: &call.request,
                fingerprint: extend_fingerprint(&call.request, &call.task_id),
                price: self.config.prices.extend(call.request.model),
                aspect,
                resolution: EXTEND_KIND,
                resolution_code: EXTEND_CODE,
                param_json: body.to_string(),
            },
        )
    }

    /// The checks every call that creates a task passes first: a connection dropped
    /// before anything happens, the key's usage cap, and the account's rate window
    /// (shared by generate and extend).
    fn enter(&self, inner: &mut Inner, caller: Caller, now: Instant) -> Option<Admission> {
        let faults = &self.config.faults;
        if faults.drop_before > 0.0 && inner.rng.f64() < faults.drop_before {
            return Some(Admission::DropBefore);
        }
        let used = inner.key_used.get(caller.key).copied().unwrap_or(0);
        if self.keys.keys[caller.key]
            .cap
            .is_some_and(|cap| used >= cap)
        {
            inner.stats.answered_433 += 1;
            return Some(Admission::Refused(Answer::err(433, MSG_KEY_CAPPED)));
        }
        if let Some(rate) = self.config.rate {
            let per = self.config.scaled(rate.per);
            let window = &mut inner.accounts[caller.account].window;
            if !window_admits(window, rate.count, per, now) {
                return Some(Admission::Refused(Answer::err(
                    429,
                    "Your call frequency is too high. Please try again later.",
                )));
            }
        }
        None
    }

    /// Refused calls do not count against the window.
    fn leave_window(&self, inner: &mut Inner, caller: Caller) {
        if self.config.rate.is_some() {
            inner.accounts[caller.account].window.pop_back();
        }
    }

    /// Credits, then a new task of the kind `new` says, and the faults drawn for it.
    fn create(
        self: &Arc<Self>,
        inner: &mut Inner,
        caller: Caller,
        now: Instant,
        new: &New<'_>,
    ) -> Admission {
        let faults = &self.config.faults;
        let req = new.request;
        let account = &mut inner.accounts[caller.account];
        if account.credits < new.price {
            self.leave_window(inner, caller);
            return Admission::Refused(Answer::err(402, MSG_NO_CREDITS));
        }
        account.credits -= new.price;
        inner.key_used[caller.key] += 1;

        let range = self
            .config
            .generation_time_of(req.model.as_str(), new.resolution);
        let generation = self.span(&mut inner.rng, range);
        let outcome =
            if faults.generation_failure > 0.0 && inner.rng.f64() < faults.generation_failure {
                // A job without images never fails to fetch one: the failures
                // that can happen to it are drawn from, the same number of draws.
                let possible: Vec<&(u8, i64, &str, bool)> = FAILURES
                    .iter()
                    .filter(|f| !req.image_urls.is_empty() || !f.2.contains("image"))
                    .collect();
                let &&(flag, code, message, _) = possible
                    .get(inner.rng.usize(..possible.len()))
                    .unwrap_or(&&FAILURES[0]);
                Outcome::Failure {
                    flag,
                    code,
                    message,
                }
            } else {
                Outcome::Success
            };
        let hd = self.span(&mut inner.rng, self.config.upgrade_1080p_time);
        let created_wall = SystemTime::now();
        let mut sealed = ids::Sealed {
            created_ms: ids::Sealed::created_ms_of(created_wall),
            uniq: 0,
            outcome: outcome.code(),
            aspect: code_of(&ASPECTS, &new.aspect),
            resolution: new.resolution_code,
            model: code_of(&MODELS, &req.model.as_str()),
            generation: ids::encode_span(generation),
            hd: ids::encode_span(hd),
        };
        let id = loop {
            sealed.uniq = ids::uniq(self.nonce, inner.created);
            inner.created += 1;
            let id = self.keys.codecs[caller.account].seal(&sealed);
            if !inner.tasks.contains_key(&id) {
                break id;
            }
        };
        // The timeline is the one the id carries, so that a later simulator that
        // re-derives this task from its id sees it end at the same moment.
        let Some(mut task) =
            Task::from_sealed(&sealed, now, created_wall, Some(new.param_json.clone()))
        else {
            return Admission::Refused(Answer::err(500, "Server error, please try again later"));
        };
        if !task.extend {
            task.resolution = new.resolution.to_owned();
        }
        task.charged = new.price;
        task.settled = false;
        task.account = caller.account;
        let ends = task.ends;
        if matches!(outcome, Outcome::Failure { .. }) && !self.config.bill_failed {
            inner.refunds.push(Reverse((ends, id)));
        }
        let ready = created_wall + ends.saturating_duration_since(now);
        inner.tasks.insert(id, task);
        let task_id = ids::format(id);
        inner.stats.tasks_created += 1;
        *inner
            .stats
            .tasks_by_account
            .entry(self.keys.names[caller.account].clone())
            .or_default() += 1;
        *inner
            .stats
            .tasks_by_fingerprint
            .entry(new.fingerprint.clone())
            .or_default() += 1;
        let drop_after = faults.drop_after > 0.0 && inner.rng.f64() < faults.drop_after;
        let slow = faults.slow > 0.0 && inner.rng.f64() < faults.slow;

        if self.config.callbacks
            && let Some(url) = req.callback_url.clone()
        {
            self.spawn_task_callback(task_id.clone(), url, ends);
        }
        Admission::Created {
            task_id,
            ready,
            drop_after,
            slow,
        }
    }

    /// The record-info poll limit: `None` when the call may go on, else the 429
    /// answer (counted in the stats).
    pub fn admit_poll(&self, caller: Caller) -> Option<Answer> {
        let rate = self.config.poll_rate?;
        let per = self.config.scaled(rate.per);
        let mut inner = self.lock();
        let window = &mut inner.accounts[caller.account].poll_window;
        if window_admits(window, rate.count, per, Instant::now()) {
            return None;
        }
        inner.stats.polls_refused += 1;
        Some(Answer::err(
            429,
            "Your call frequency is too high. Please try again later.",
        ))
    }

    /// Refunds the failed tasks whose end has come (failed tasks are free), each
    /// once: they leave the queue as they are refunded.
    fn settle(inner: &mut Inner, now: Instant) {
        while let Some(Reverse((ends, id))) = inner.refunds.peek().copied() {
            if ends > now {
                break;
            }
            inner.refunds.pop();
            if let Some(task) = inner.tasks.get_mut(&id)
                && !task.settled
            {
                task.settled = true;
                if let Some(account) = inner.accounts.get_mut(task.account) {
                    account.credits += task.charged;
                }
            }
        }
    }

    /// The task `task_id` names: one this simulator holds, or one an earlier
    /// simulator with the same seed created, re-derived from its id and kept. With
    /// `account`, only a task of that account: the service answers "record is
    /// null" to a key of another (`None`: any, for the public file links).
    fn task<'a>(
        &self,
        inner: &'a mut Inner,
        task_id: &str,
        account: Option<usize>,
    ) -> Option<(u128, &'a mut Task)> {
        let id = ids::parse(task_id)?;
        let task = match inner.tasks.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let (owner, sealed) = self
                    .keys
                    .codecs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| account.is_none_or(|a| a == *i))
                    .find_map(|(i, codec)| codec.open(id).map(|s| (i, s)))?;
                let created_wall = sealed.created_wall();
                let (now, wall) = (Instant::now(), SystemTime::now());
                let age = wall.duration_since(created_wall).unwrap_or(Duration::ZERO);
                let created = now.checked_sub(age).unwrap_or(now);
                let mut task = Task::from_sealed(&sealed, created, created_wall, None)?;
                task.account = owner;
                e.insert(task)
            }
        };
        if account.is_some_and(|a| a != task.account) {
            return None;
        }
        Some((id, task))
    }

    pub fn stats(&self) -> SimStats {
        let mut inner = self.lock();
        Self::settle(&mut inner, Instant::now());
        let mut stats = inner.stats.clone();
        stats.credits = inner.accounts.iter().map(|a| a.credits).sum();
        stats.credits_by_account = self
            .keys
            .names
            .iter()
            .cloned()
            .zip(inner.accounts.iter().map(|a| a.credits))
            .collect();
        stats
    }

    /// Adds `credits` to the balance of the unnamed account (`api_key`'s), as a
    /// top-up on the account does.
    pub fn top_up(&self, credits: f64) {
        self.lock().accounts[0].credits += credits;
    }

    /// The balance of the caller's account.
    pub fn credits(&self, caller: Caller) -> f64 {
        let mut inner = self.lock();
        Self::settle(&mut inner, Instant::now());
        inner.accounts[caller.account].credits
    }

    fn file_url(&self, task_id: &str, suffix: &str) -> String {
        format!("{}/files/{task_id}{suffix}.mp4", self.base_url)
    }

    fn info(&self, task_id: &str, task: &Task) -> Value {
        // The 720p render comes beside a higher resolution (and beside a non-16:9
        // video, as the docs say).
        let origin: Vec<String> = if task.aspect == AspectRatio::Landscape
            && task.resolution == Resolution::Hd720.as_str()
        {
            Vec::new()
        } else {
            vec![self.file_url(task_id, "-origin")]
        };
        let mut info = json!({
            "resultUrls": [self.file_url(task_id, "")],
            "originUrls": origin,
            "resolution": task.resolution,
        });
        if task.extend {
            // The new segment above; the whole stitched video here.
            info["fullResultUrls"] = json!([self.file_url(task_id, "-full")]);
        }
        info
    }

    /// The record-info answer for `task_id`, asked by `caller`.
    pub fn record_info(&self, caller: Caller, task_id: &str) -> Answer {
        let now = Instant::now();
        let mut inner = self.lock();
        Self::settle(&mut inner, now);
        let Some((_, task)) = self.task(&mut inner, task_id, Some(caller.account)) else {
            return Answer::err(422, MSG_RECORD_NULL);
        };
        let task = &*task;
        let done = task.ends <= now;
        let complete_wall = task
            .created_wall
            .checked_add(task.ends.saturating_duration_since(task.created));
        let (flag, response, error_code, error_message) = match (done, task.outcome) {
            (false, _) => (0, Value::Null, Value::Null, Value::Null),
            (true, Outcome::Success) => {
                let mut response = self.info(task_id, task);
                response["taskId"] = Value::from(task_id);
                (1, response, Value::Null, Value::from(""))
            }
            (
                true,
                Outcome::Failure {
                    flag,
                    code,
                    message,
                },
            ) => (flag, Value::Null, Value::from(code), Value::from(message)),
        };
        Answer::ok(json!({
            "taskId": task_id,
            "paramJson": task.param_json,
            "successFlag": flag,
            "response": response,
            "errorCode": error_code,
            "errorMessage": error_message,
            "createTime": wall_time(task.created_wall),
            "completeTime": match complete_wall {
                Some(t) if done => Value::from(wall_time(t)),
                _ => Value::Null,
            },
            "fallbackFlag": false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_749_205_800);
        assert_eq!(wall_time(t), "2025-06-06 10:30:00");
    }

    fn sim(config: SimConfig) -> Arc<Sim> {
        Arc::new(Sim::new(
            config,
            "http://sim".into(),
            None,
            CancellationToken::new(),
        ))
    }

    fn request(prompt: &str) -> (GenerateRequest, Value) {
        let body = json!({ "prompt": prompt });
        let raw = crate::request::RawRequest::from_json(&body).unwrap();
        (crate::request::check(&raw).result.unwrap(), body)
    }

    fn created(a: Admission) -> String {
        match a {
            Admission::Created { task_id, .. } => task_id,
            _ => panic!("no task created"),
        }
    }

    fn flag(sim: &Sim, id: &str) -> i64 {
        sim.record_info(Caller::MAIN, id).data["successFlag"]
            .as_i64()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn some_failures_show_early_and_moderation_only_at_the_end() {
        let sim = sim(SimConfig {
            generation_time: (Duration::from_secs(100), Duration::from_secs(100)),
            rate: None,
            faults: super::super::Faults {
                generation_failure: 1.0,
                ..Default::default()
            },
            ..SimConfig::default()
        });
        let (req, body) = request("x");
        let ids: Vec<String> = (0..20)
            .map(|_| created(sim.admit(Caller::MAIN, &req, &body)))
            .collect();
        let before = sim.credits(Caller::MAIN);
        tokio::time::advance(Duration::from_secs(11)).await;
        let early = ids.iter().filter(|id| flag(&sim, id) != 0).count();
        assert!(
            early > 0 && early < ids.len(),
            "{early} of {} early",
            ids.len()
        );
        tokio::time::advance(Duration::from_secs(90)).await;
        for id in &ids {
            let info = sim.record_info(Caller::MAIN, id).data;
            assert!(
                matches!(info["successFlag"].as_i64(), Some(2 | 3)),
                "{info}"
            );
            assert!(info["errorCode"].is_i64());
        }
        assert!(
            (sim.credits(Caller::MAIN) - before - 20.0 * 60.0).abs() < 1e-9,
            "all refunded"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_window_slides() {
        let sim = sim(SimConfig {
            rate: Some(crate::units::Rate {
                count: 2,
                per: Duration::from_secs(10),
            }),
            ..SimConfig::default()
        });
        let (req, body) = request("x");
        let refused = |a: Admission| matches!(a, Admission::Refused(Answer { code: 429, .. }));
        created(sim.admit(Caller::MAIN, &req, &body));
        tokio::time::advance(Duration::from_secs(6)).await;
        created(sim.admit(Caller::MAIN, &req, &body));
        assert!(refused(sim.admit(Caller::MAIN, &req, &body)));
        tokio::time::advance(Duration::from_secs(4)).await;
        // The first call left the window; the second is still in it.
        created(sim.admit(Caller::MAIN, &req, &body));
        assert!(refused(sim.admit(Caller::MAIN, &req, &body)));
    }

    #[tokio::test(start_paused = true)]
    async fn upgrades_charge_once() {
        let sim = sim(SimConfig {
            generation_time: (Duration::from_secs(10), Duration::from_secs(10)),
            upgrade_1080p_time: (Duration::from_secs(60), Duration::from_secs(60)),
            credits: 180.0,
            record_lag: Duration::ZERO,
            ..SimConfig::default()
        });
        let (req, body) = request("x");
        let id = created(sim.admit(Caller::MAIN, &req, &body));
        assert_eq!(sim.get_1080p(Caller::MAIN, &id, 0).code, 400);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            sim.get_1080p(Caller::MAIN, &id, 0).msg,
            MSG_1080P_PROCESSING
        );
        assert_eq!(sim.get_1080p(Caller::MAIN, &id, 1).code, 422);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(sim.get_1080p(Caller::MAIN, &id, 0).code, 200);
        assert_eq!(sim.get_1080p(Caller::MAIN, &id, 0).code, 200);
        assert!(
            (sim.credits(Caller::MAIN) - 115.0).abs() < 1e-9,
            "1080p charged once"
        );
        assert_eq!(
            sim.get_4k(Caller::MAIN, &id, 0, None).code,
            402,
            "4k costs 120"
        );
        assert!((sim.credits(Caller::MAIN) - 115.0).abs() < 1e-9);
    }

    /// Refunds follow the tasks that failed and are due, exactly once, whatever
    /// asks (record-info, credit, stats, upgrades), in any order and repeated.
    #[tokio::test(start_paused = true)]
    async fn failed_tasks_are_refunded_once_whatever_asks_and_when() {
        for seed in 0..40u64 {
            let sim = sim(SimConfig {
                generation_time: (Duration::from_secs(10), Duration::from_secs(60)),
                upgrade_1080p_time: (Duration::from_secs(5), Duration::from_secs(5)),
                upgrade_4k_time: (Duration::from_secs(5), Duration::from_secs(5)),
                rate: None,
                credits: 100_000.0,
                seed,
                faults: super::super::Faults {
                    generation_failure: 0.5,
                    ..Default::default()
                },
                ..SimConfig::default()
            });
            let start = sim.credits(Caller::MAIN);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut ids: Vec<String> = Vec::new();
            let mut upgraded = std::collections::HashSet::new();
            let mut charged = 0.0;
            for _ in 0..80 {
                tokio::time::advance(Duration::from_millis(rng.u64(0..4000))).await;
                let id = (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())].clone());
                match (rng.u8(0..6), id) {
                    (0, _) | (_, None) => {
                        let (req, body) = request("x");
                        ids.push(created(sim.admit(Caller::MAIN, &req, &body)));
                        charged += 60.0;
                    }
                    (1, Some(id)) => {
                        sim.record_info(Caller::MAIN, &id);
                    }
                    (2, Some(id)) => {
                        // Charged once, however often it is asked.
                        if sim.get_1080p(Caller::MAIN, &id, 0).code == 200 && upgraded.insert(id) {
                            charged += 5.0;
                        }
                    }
                    (3, Some(id)) => {
                        if sim.get_4k(Caller::MAIN, &id, 0, None).code == 200 {
                            charged += 120.0;
                        }
                    }
                    (4, _) => {
                        sim.stats();
                    }
                    (_, _) => {
                        sim.credits(Caller::MAIN);
                    }
                }
                // What must have come back: every failed task whose end has come.
                let due = {
                    let inner = sim.lock();
                    let now = Instant::now();
                    inner
                        .tasks
                        .values()
                        .filter(|t| t.ends <= now && matches!(t.outcome, Outcome::Failure { .. }))
                        .map(|t| t.charged)
                        .sum::<f64>()
                };
                let credits = sim.credits(Caller::MAIN);
                assert!(
                    (credits - (start - charged + due)).abs() < 1e-6,
                    "seed {seed}: {credits} != {start} - {charged} + {due}"
                );
                assert!(
                    (sim.credits(Caller::MAIN) - credits).abs() < 1e-9,
                    "asking again changes nothing"
                );
            }
            let failed = ids.iter().filter(|id| flag(&sim, id) > 1).count();
            assert!(failed > 0 || seed > 0, "seed {seed} has failures to refund");
            assert!(sim.lock().refunds.len() <= ids.len());
        }
    }

    #[tokio::test]
    async fn a_text_job_never_fails_to_fetch_an_image() {
        let config = SimConfig {
            rate: None,
            faults: super::super::Faults {
                generation_failure: 1.0,
                ..Default::default()
            },
            ..SimConfig::default()
        };
        let sim = sim(config);
        let (req, body) = request("no images here");
        for _ in 0..40 {
            created(sim.admit(Caller::MAIN, &req, &body));
        }
        let inner = sim.lock();
        assert_eq!(inner.tasks.len(), 40);
        for t in inner.tasks.values() {
            let Outcome::Failure { message, .. } = t.outcome else {
                panic!("every task fails at a failure rate of 1");
            };
            assert!(!message.contains("image"), "{message}");
        }
    }

    #[tokio::test]
    async fn ids_are_32_hex_never_repeat_and_a_later_simulator_re_derives_them() {
        let config = SimConfig {
            generation_time: (Duration::from_millis(40), Duration::from_millis(80)),
            upgrade_1080p_time: (Duration::from_millis(30), Duration::from_millis(30)),
            rate: None,
            faults: super::super::Faults {
                generation_failure: 0.4,
                ..Default::default()
            },
            ..SimConfig::default()
        };
        // Made first: a simulator's HTTP client takes a while to build.
        let [first, second, later] = [(); 3].map(|()| sim(config.clone()));
        let unknown = sim(SimConfig { seed: 2, ..config });
        let (req, _) = request("x");
        let tall = json!({ "prompt": "x", "aspect_ratio": "9:16", "resolution": "720p" });
        let tall_req = {
            let raw = crate::request::RawRequest::from_json(&tall).unwrap();
            crate::request::check(&raw).result.unwrap()
        };
        let ids: Vec<String> = (0..30)
            .map(|i| {
                if i % 2 == 0 {
                    created(first.admit(Caller::MAIN, &req, &json!({ "prompt": "x" })))
                } else {
                    created(first.admit(Caller::MAIN, &tall_req, &tall))
                }
            })
            .collect();
        // Another simulator with the same seed and the same calls: other ids.
        let again: Vec<String> = (0..30)
            .map(|_| created(second.admit(Caller::MAIN, &req, &json!({ "prompt": "x" }))))
            .collect();
        let mut all: Vec<&String> = ids.iter().chain(&again).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 60, "no id repeats");
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }

        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut pending = 0;
        for id in &ids {
            let (mine, theirs) = (
                first.record_info(Caller::MAIN, id),
                later.record_info(Caller::MAIN, id),
            );
            assert_eq!(theirs.code, 200, "{id}: {}", theirs.msg);
            pending += usize::from(mine.data["successFlag"] == 0);
            // Done or not may differ at the very end: an id keeps the creation
            // time to the millisecond.
            for field in ["taskId", "createTime"] {
                assert_eq!(mine.data[field], theirs.data[field], "{field}");
            }
        }
        assert!(pending > 0, "some are still generating");
        tokio::time::sleep(Duration::from_millis(150)).await;
        for id in &ids {
            let (mine, theirs) = (
                first.record_info(Caller::MAIN, id).data,
                later.record_info(Caller::MAIN, id).data,
            );
            for field in ["successFlag", "response", "errorCode", "completeTime"] {
                assert_eq!(mine[field], theirs[field], "{id} {field}");
            }
            let ok = mine["successFlag"] == 1;
            assert_eq!(
                later.file(&format!("{id}.mp4"), None) == FileState::Ready,
                ok
            );
            // A task it re-derived is one it knows: its 1080p file is made (or,
            // right after success, "record ..." not ready yet), a failed one's never.
            let hd = later.get_1080p(Caller::MAIN, id, 0);
            if ok {
                assert!(
                    hd.code == 200 || hd.msg.starts_with("record"),
                    "{id}: {hd:?}"
                );
            } else {
                assert_ne!(hd.code, 200, "{id}");
            }
        }
        assert_eq!(
            unknown.record_info(Caller::MAIN, &ids[0]).msg,
            MSG_RECORD_NULL,
            "another seed"
        );
        assert_eq!(
            later.record_info(Caller::MAIN, "veo_task_0000").msg,
            MSG_RECORD_NULL
        );
        assert_eq!(later.file("veo_task_0000.mp4", None), FileState::Missing);
        assert_eq!(later.stats().tasks_created, 0, "re-derived, not created");
    }

    #[tokio::test(start_paused = true)]
    async fn polls_past_the_limit_answer_429_and_are_counted() {
        let limited = sim(SimConfig {
            poll_rate: Some(crate::units::Rate::KIE_POLLS),
            ..SimConfig::default()
        });
        assert!((0..10).all(|_| limited.admit_poll(Caller::MAIN).is_none()));
        assert_eq!(limited.admit_poll(Caller::MAIN).map(|a| a.code), Some(429));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(
            limited.admit_poll(Caller::MAIN).is_none(),
            "the window slid"
        );
        assert_eq!(limited.stats().polls_refused, 1);
        let free = sim(SimConfig::default());
        assert!(
            (0..100).all(|_| free.admit_poll(Caller::MAIN).is_none()),
            "off by default"
        );
    }

    #[test]
    fn a_kind_of_task_can_have_its_own_generation_time() {
        let secs = Duration::from_secs;
        let config = SimConfig {
            generation_time_for: vec![
                ("veo3".into(), (secs(1), secs(2))),
                ("veo3:4k".into(), (secs(3), secs(4))),
            ],
            ..SimConfig::default()
        };
        assert_eq!(config.generation_time_of("veo3", "4k"), (secs(3), secs(4)));
        assert_eq!(
            config.generation_time_of("veo3", "720p"),
            (secs(1), secs(2))
        );
        assert_eq!(
            config.generation_time_of("veo3_fast", "4k"),
            config.generation_time
        );
    }

    fn extend_call(task_id: &str, model: &str) -> (ExtendCall, Value) {
        let body = json!({ "taskId": task_id, "prompt": "on", "model": model });
        (crate::request::check_extend_json(&body).unwrap(), body)
    }

    /// Extend continues only a finished, successful video of this account without its
    /// 1080p version, charges the extend price, and its task (re-derived by a later
    /// simulator too) reports the segment and a distinct stitched file.
    #[tokio::test(start_paused = true)]
    async fn extend_takes_only_a_finished_720p_video_and_reports_the_stitched_one() {
        let config = SimConfig {
            generation_time: (Duration::from_secs(10), Duration::from_secs(10)),
            upgrade_1080p_time: (Duration::from_secs(1), Duration::from_secs(1)),
            record_lag: Duration::ZERO,
            rate: None,
            ..SimConfig::default()
        };
        let sim = sim(config.clone());
        let (req, body) = request("base");
        let base = created(sim.admit(Caller::MAIN, &req, &body));
        let refused = |a: Admission| match a {
            Admission::Refused(answer) => answer,
            _ => panic!("created"),
        };
        let (call, body) = extend_call(&base, "lite");
        assert_eq!(
            refused(sim.admit_extend(Caller::MAIN, &call, &body)).msg,
            "the video is still being generated; extend it after it succeeds"
        );
        let (unknown, unknown_body) = extend_call("veo_task_0000", "fast");
        assert_eq!(
            refused(sim.admit_extend(Caller::MAIN, &unknown, &unknown_body)).msg,
            MSG_RECORD_NULL
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        let before = sim.credits(Caller::MAIN);
        let ext = created(sim.admit_extend(Caller::MAIN, &call, &body));
        assert!(
            (before - sim.credits(Caller::MAIN) - 15.0).abs() < 1e-9,
            "lite's extend price"
        );
        // A chain: an extend of the extend.
        tokio::time::advance(Duration::from_secs(11)).await;
        let (next, next_body) = extend_call(&ext, "lite");
        created(sim.admit_extend(Caller::MAIN, &next, &next_body));
        let info = sim.record_info(Caller::MAIN, &ext).data;
        assert_eq!(info["successFlag"], 1);
        let segment = info["response"]["resultUrls"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let full = info["response"]["fullResultUrls"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(full.ends_with(&format!("{ext}-full.mp4")) && segment != full);
        assert_eq!(sim.file(&format!("{ext}-full.mp4"), None), FileState::Ready);
        assert_eq!(
            sim.file(&format!("{base}-full.mp4"), None),
            FileState::Missing,
            "a generation has no stitched file"
        );
        assert!(
            sim.record_info(Caller::MAIN, &base).data["response"]
                .get("fullResultUrls")
                .is_none()
        );
        // A later simulator (the next `run --simulate`) knows it is an extend. Its
        // clock counts from the wall clock, which the paused test clock leaves
        // behind: the task is new to it, and done once its generation time passed.
        let later = self::sim(config);
        assert_eq!(later.record_info(Caller::MAIN, &ext).data["successFlag"], 0);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            later.record_info(Caller::MAIN, &ext).data["response"],
            info["response"]
        );
        // Its 1080p version made, a video cannot be extended.
        assert_eq!(sim.get_1080p(Caller::MAIN, &base, 0).code, 200);
        assert_eq!(
            refused(sim.admit_extend(Caller::MAIN, &call, &body)).msg,
            MSG_NO_EXTEND_1080P
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_video_cannot_be_extended() {
        let sim = sim(SimConfig {
            generation_time: (Duration::from_secs(10), Duration::from_secs(10)),
            rate: None,
            faults: super::super::Faults {
                generation_failure: 1.0,
                ..Default::default()
            },
            ..SimConfig::default()
        });
        let (req, body) = request("base");
        let base = created(sim.admit(Caller::MAIN, &req, &body));
        tokio::time::advance(Duration::from_secs(11)).await;
        let (call, body) = extend_call(&base, "fast");
        match sim.admit_extend(Caller::MAIN, &call, &body) {
            Admission::Refused(a) => {
                assert_eq!(
                    (a.code, a.msg.as_str()),
                    (422, "the task failed; it has no video to extend")
                );
            }
            _ => panic!("extended a failed video"),
        }
    }

    #[test]
    fn failures_have_terminal_flags() {
        assert!(FAILURES.iter().all(|f| f.0 == 2 || f.0 == 3));
        assert!(FAILURES.iter().any(|f| f.3), "some fail only at the end");
        assert!(FAILURES.iter().any(|f| !f.3), "some fail early");
    }
}
