//! The simulator's state: tasks and their timelines, the credit balance, the
//! generate rate window, the seeded generator behind every random draw, the
//! counters and the request log. One mutex, never held across an await.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, SimConfig, SimStats};
use crate::request::{AspectRatio, GenerateRequest, Resolution};

mod callback;

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

/// How a failed task fails: (successFlag, errorCode, errorMessage, only at the end).
/// The delayed ones stand for moderation, which rejects after a normal-looking run.
const FAILURES: [(u8, i64, &str, bool); 4] = [
    (
        2,
        400,
        "Your prompt was flagged by the content policy after review",
        true,
    ),
    (
        2,
        400,
        "Failed to fetch the image from imageUrls; check that it is public",
        false,
    ),
    (
        3,
        501,
        "Generation failed upstream; the task was created but produced no video",
        false,
    ),
    (
        2,
        500,
        "Internal error during generation, please try again",
        true,
    ),
];

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure {
        flag: u8,
        code: i64,
        message: &'static str,
    },
}

#[derive(Debug)]
struct Task {
    param_json: String,
    aspect: AspectRatio,
    resolution: String,
    created: Instant,
    created_wall: SystemTime,
    ends: Instant,
    outcome: Outcome,
    charged: f64,
    settled: bool,
    hd_ready: Instant,
    hd_charged: bool,
    uhd_ready: Option<Instant>,
}

/// What happened to one generate call that passed validation.
pub(crate) enum Admission {
    Refused(Answer),
    DropBefore,
    Created {
        task_id: String,
        drop_after: bool,
        slow: bool,
    },
}

struct Inner {
    rng: fastrand::Rng,
    credits: f64,
    window: VecDeque<Instant>,
    tasks: HashMap<String, Task>,
    stats: SimStats,
}

pub(crate) struct Sim {
    pub config: SimConfig,
    pub base_url: String,
    pub started: Instant,
    pub stop: CancellationToken,
    http: reqwest::Client,
    log: Option<Mutex<File>>,
    inner: Mutex<Inner>,
    /// Files on the upload host (`super::uploads`).
    pub uploads: super::uploads::Store,
}

/// One line of the request log.
#[derive(Debug, Serialize)]
pub(crate) struct LogLine<'a> {
    pub ts: String,
    pub endpoint: &'a str,
    pub prompt: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub task_id: Option<&'a str>,
    /// The answer code; null when the connection was dropped instead.
    pub code: Option<i64>,
    pub task_created: bool,
    pub dropped: bool,
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
        let inner = Inner {
            rng: fastrand::Rng::with_seed(config.seed),
            credits: config.credits,
            window: VecDeque::new(),
            tasks: HashMap::new(),
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
            inner: Mutex::new(inner),
            uploads: super::uploads::Store::default(),
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

    fn later(at: Instant, d: Duration) -> Instant {
        at.checked_add(d).unwrap_or(at)
    }

    pub fn in_maintenance(&self, now: Instant) -> bool {
        let Some(m) = self.config.faults.maintenance else {
            return false;
        };
        let start = Self::later(self.started, self.config.scaled(m.start));
        let end = Self::later(start, self.config.scaled(m.duration));
        now >= start && now < end
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

    /// Rate window, credits, faults and, when all pass, a new task.
    pub fn admit(self: &Arc<Self>, req: &GenerateRequest, body: &Value) -> Admission {
        let now = Instant::now();
        let faults = &self.config.faults;
        let mut inner = self.lock();
        let inner = &mut *inner;
        if faults.drop_before > 0.0 && inner.rng.f64() < faults.drop_before {
            return Admission::DropBefore;
        }
        if let Some(rate) = self.config.rate {
            let per = self.config.scaled(rate.per);
            while inner
                .window
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= per)
            {
                inner.window.pop_front();
            }
            if inner.window.len() >= rate.count as usize {
                return Admission::Refused(Answer::err(
                    429,
                    "Your call frequency is too high. Please try again later.",
                ));
            }
        }
        if req.image_urls.iter().any(|u| unfetchable(u)) {
            return Admission::Refused(Answer::err(451, MSG_IMAGE_FETCH));
        }
        let resolution = req.resolution.unwrap_or_default();
        let price = self
            .config
            .prices
            .generation(req.model, resolution)
            .unwrap_or(0.0);
        if inner.credits < price {
            return Admission::Refused(Answer::err(402, MSG_NO_CREDITS));
        }
        if self.config.rate.is_some() {
            inner.window.push_back(now);
        }
        inner.credits -= price;

        let task_id = loop {
            let id = format!("veo_task_{:016x}", inner.rng.u64(..));
            if !inner.tasks.contains_key(&id) {
                break id;
            }
        };
        let generation = self.span(&mut inner.rng, self.config.generation_time);
        let outcome =
            if faults.generation_failure > 0.0 && inner.rng.f64() < faults.generation_failure {
                let (flag, code, message, _) = FAILURES[inner.rng.usize(..FAILURES.len())];
                Outcome::Failure {
                    flag,
                    code,
                    message,
                }
            } else {
                Outcome::Success
            };
        let ends = match outcome {
            Outcome::Failure { message, .. } if FAILURES.iter().any(|f| f.2 == message && !f.3) => {
                Self::later(now, generation / 10)
            }
            _ => Self::later(now, generation),
        };
        let hd_ready = Self::later(
            ends,
            self.span(&mut inner.rng, self.config.upgrade_1080p_time),
        );
        let resolution = resolution.as_str().to_owned();
        inner.tasks.insert(
            task_id.clone(),
            Task {
                param_json: body.to_string(),
                aspect: req.aspect_ratio,
                resolution,
                created: now,
                created_wall: SystemTime::now(),
                ends,
                outcome,
                charged: price,
                settled: false,
                hd_ready,
                hd_charged: false,
                uhd_ready: None,
            },
        );
        inner.stats.tasks_created += 1;
        *inner
            .stats
            .tasks_by_fingerprint
            .entry(req.fingerprint())
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
            drop_after,
            slow,
        }
    }

    /// Refunds every failed task whose end has come (failed tasks are free).
    fn settle(inner: &mut Inner, now: Instant) {
        let mut refund = 0.0;
        for task in inner.tasks.values_mut() {
            if !task.settled && task.ends <= now {
                task.settled = true;
                if matches!(task.outcome, Outcome::Failure { .. }) {
                    refund += task.charged;
                }
            }
        }
        inner.credits += refund;
    }

    pub fn stats(&self) -> SimStats {
        let mut inner = self.lock();
        Self::settle(&mut inner, Instant::now());
        let mut stats = inner.stats.clone();
        stats.credits = inner.credits;
        stats
    }

    pub fn credits(&self) -> f64 {
        let mut inner = self.lock();
        Self::settle(&mut inner, Instant::now());
        inner.credits
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
        json!({
            "resultUrls": [self.file_url(task_id, "")],
            "originUrls": origin,
            "resolution": task.resolution,
        })
    }

    /// The record-info answer for `task_id`.
    pub fn record_info(&self, task_id: &str) -> Answer {
        let now = Instant::now();
        let mut inner = self.lock();
        Self::settle(&mut inner, now);
        let Some(task) = inner.tasks.get(task_id) else {
            return Answer::err(422, MSG_RECORD_NULL);
        };
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

    /// The get-1080p-video answer.
    pub fn get_1080p(&self, task_id: &str, index: u32) -> Answer {
        let now = Instant::now();
        let price = self.config.prices.upgrade_1080p;
        let mut inner = self.lock();
        Self::settle(&mut inner, now);
        let inner = &mut *inner;
        let Some(task) = inner.tasks.get_mut(task_id) else {
            return Answer::err(422, MSG_RECORD_NULL);
        };
        if index != 0 {
            return Answer::err(422, format!("index {index} is out of range (0)"));
        }
        if task.ends > now {
            return Answer::err(400, MSG_1080P_PROCESSING);
        }
        if matches!(task.outcome, Outcome::Failure { .. }) {
            return Answer::err(422, "the task failed; it has no 1080P video");
        }
        if now < Self::later(task.ends, self.config.scaled(self.config.record_lag)) {
            return Answer::err(422, MSG_RECORD_BLANK);
        }
        if task.hd_ready > now {
            return Answer::err(400, MSG_1080P_PROCESSING);
        }
        if !task.hd_charged {
            if inner.credits < price {
                return Answer::err(402, MSG_NO_CREDITS);
            }
            inner.credits -= price;
            task.hd_charged = true;
        }
        Answer::ok(json!({ "resultUrl": self.file_url(task_id, "-1080p") }))
    }

    /// The get-4k-video answer; the first call starts (and pays for) the upgrade.
    pub fn get_4k(self: &Arc<Self>, task_id: &str, index: u32, callback: Option<String>) -> Answer {
        let now = Instant::now();
        let price = self.config.prices.upgrade_4k;
        let mut guard = self.lock();
        Self::settle(&mut guard, now);
        let inner = &mut *guard;
        let Some(task) = inner.tasks.get_mut(task_id) else {
            return Answer::err(422, MSG_RECORD_NULL);
        };
        if index != 0 {
            return Answer::err(422, format!("index {index} is out of range (0)"));
        }
        if task.ends > now {
            return Answer::err(
                422,
                "the video is still being generated; ask for 4K after it succeeds",
            );
        }
        if matches!(task.outcome, Outcome::Failure { .. }) {
            return Answer::err(422, "the task failed; it has no video to upgrade");
        }
        if now < Self::later(task.ends, self.config.scaled(self.config.record_lag)) {
            return Answer::err(422, MSG_RECORD_BLANK);
        }
        let done = json!({
            "taskId": task_id,
            "resultUrls": [self.file_url(task_id, "-4k")],
            "imageUrls": [],
        });
        match task.uhd_ready {
            Some(ready) if ready <= now => Answer {
                code: 422,
                msg: MSG_4K_DONE.into(),
                data: done,
            },
            Some(_) => Answer::err(422, MSG_4K_PROCESSING),
            None => {
                if inner.credits < price {
                    return Answer::err(402, MSG_NO_CREDITS);
                }
                inner.credits -= price;
                let took = self.span(&mut inner.rng, self.config.upgrade_4k_time);
                let ready = Self::later(now, took);
                if let Some(task) = inner.tasks.get_mut(task_id) {
                    task.uhd_ready = Some(ready);
                }
                drop(guard);
                if self.config.callbacks
                    && let Some(url) = callback
                {
                    let body = json!({
                        "code": 200,
                        "msg": "4K Video generated successfully.",
                        "data": done,
                    });
                    self.spawn_callback(url, ready, move |_| Some(body));
                }
                Answer::ok(json!({ "taskId": task_id }))
            }
        }
    }

    /// What `/files/<name>` serves: the video of a task that succeeded, until its
    /// URL expires; with `link` (from [`Sim::download_url`]) until that link does.
    pub fn file(&self, name: &str, link: Option<u64>) -> FileState {
        let Some(stem) = name.strip_suffix(".mp4") else {
            return FileState::Missing;
        };
        let id = ["-1080p", "-4k", "-origin"]
            .iter()
            .find_map(|s| stem.strip_suffix(s))
            .unwrap_or(stem);
        let now = Instant::now();
        let inner = self.lock();
        let Some(task) = inner
            .tasks
            .get(id)
            .filter(|t| t.ends <= now && matches!(t.outcome, Outcome::Success))
        else {
            return FileState::Missing;
        };
        if let Some(until) = link {
            return if self.millis_since_start(now) < until {
                FileState::Ready
            } else {
                FileState::Expired
            };
        }
        match self.config.url_ttl {
            Some(ttl) if Self::later(task.ends, self.config.scaled(ttl)) <= now => {
                FileState::Expired
            }
            _ => FileState::Ready,
        }
    }

    fn millis_since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// The `download-url` answer: a fresh link to one of this simulator's result
    /// files, valid for `download_link_ttl`; 422 "url is wrong" for any other URL.
    pub fn download_url(&self, url: &str) -> Answer {
        let prefix = format!("{}/files/", self.base_url);
        let name = url
            .strip_prefix(&prefix)
            .map(|rest| rest.split(['?', '#']).next().unwrap_or(rest))
            .filter(|name| !name.is_empty() && !name.contains('/'));
        let Some(name) = name else {
            return Answer::err(422, MSG_URL_WRONG);
        };
        let now = Instant::now();
        let ttl = self.config.scaled(self.config.download_link_ttl);
        let until = self
            .millis_since_start(now)
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        match self.file(name, Some(until)) {
            FileState::Ready => Answer::ok(Value::from(format!("{prefix}{name}?link={until}"))),
            FileState::Missing | FileState::Expired => Answer::err(422, MSG_URL_WRONG),
        }
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
        sim.record_info(id).data["successFlag"].as_i64().unwrap()
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
        let ids: Vec<String> = (0..20).map(|_| created(sim.admit(&req, &body))).collect();
        let before = sim.credits();
        tokio::time::advance(Duration::from_secs(11)).await;
        let early = ids.iter().filter(|id| flag(&sim, id) != 0).count();
        assert!(
            early > 0 && early < ids.len(),
            "{early} of {} early",
            ids.len()
        );
        tokio::time::advance(Duration::from_secs(90)).await;
        for id in &ids {
            let info = sim.record_info(id).data;
            assert!(
                matches!(info["successFlag"].as_i64(), Some(2 | 3)),
                "{info}"
            );
            assert!(info["errorCode"].is_i64());
        }
        assert!(
            (sim.credits() - before - 20.0 * 60.0).abs() < 1e-9,
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
        created(sim.admit(&req, &body));
        tokio::time::advance(Duration::from_secs(6)).await;
        created(sim.admit(&req, &body));
        assert!(refused(sim.admit(&req, &body)));
        tokio::time::advance(Duration::from_secs(4)).await;
        // The first call left the window; the second is still in it.
        created(sim.admit(&req, &body));
        assert!(refused(sim.admit(&req, &body)));
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
        let id = created(sim.admit(&req, &body));
        assert_eq!(sim.get_1080p(&id, 0).code, 400);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(sim.get_1080p(&id, 0).msg, MSG_1080P_PROCESSING);
        assert_eq!(sim.get_1080p(&id, 1).code, 422);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(sim.get_1080p(&id, 0).code, 200);
        assert_eq!(sim.get_1080p(&id, 0).code, 200);
        assert!((sim.credits() - 115.0).abs() < 1e-9, "1080p charged once");
        assert_eq!(sim.get_4k(&id, 0, None).code, 402, "4k costs 120");
        assert!((sim.credits() - 115.0).abs() < 1e-9);
    }

    #[test]
    fn failures_have_terminal_flags() {
        assert!(FAILURES.iter().all(|f| f.0 == 2 || f.0 == 3));
        assert!(FAILURES.iter().any(|f| f.3), "some fail only at the end");
        assert!(FAILURES.iter().any(|f| !f.3), "some fail early");
    }
}
