//! The simulator's answers about a task's files: the 1080p and 4K upgrades, the
//! video files it serves (and when their links expire), and fresh download links.

use super::*;

impl Sim {
    /// The get-1080p-video answer.
    pub fn get_1080p(&self, caller: Caller, task_id: &str, index: u32) -> Answer {
        let now = Instant::now();
        let price = self.config.prices.upgrade_1080p;
        let mut guard = self.lock();
        Self::settle(&mut guard, now);
        let inner = &mut *guard;
        let Some((id, task)) = self.task(inner, task_id, Some(caller.account)) else {
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
        if now < later(task.ends, self.config.scaled(self.config.record_lag)) {
            return Answer::err(422, MSG_RECORD_BLANK);
        }
        if task.hd_ready > now {
            return Answer::err(400, MSG_1080P_PROCESSING);
        }
        if !task.hd_charged {
            let account = &mut inner.accounts[caller.account];
            if account.credits < price {
                return Answer::err(402, MSG_NO_CREDITS);
            }
            account.credits -= price;
            if let Some(task) = inner.tasks.get_mut(&id) {
                task.hd_charged = true;
            }
        }
        Answer::ok(json!({ "resultUrl": self.file_url(task_id, "-1080p") }))
    }

    /// The get-4k-video answer; the first call starts (and pays for) the upgrade.
    pub fn get_4k(
        self: &Arc<Self>,
        caller: Caller,
        task_id: &str,
        index: u32,
        callback: Option<String>,
    ) -> Answer {
        let now = Instant::now();
        let price = self.config.prices.upgrade_4k;
        let mut guard = self.lock();
        Self::settle(&mut guard, now);
        let inner = &mut *guard;
        let Some((id, task)) = self.task(inner, task_id, Some(caller.account)) else {
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
        if now < later(task.ends, self.config.scaled(self.config.record_lag)) {
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
                let account = &mut inner.accounts[caller.account];
                if account.credits < price {
                    return Answer::err(402, MSG_NO_CREDITS);
                }
                account.credits -= price;
                let took = self.span(&mut inner.rng, self.config.upgrade_4k_time);
                let ready = later(now, took);
                if let Some(task) = inner.tasks.get_mut(&id) {
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
        self.file_of(None, name, link)
    }

    /// [`Sim::file`] of a task of `account` only (`None`: any).
    fn file_of(&self, account: Option<usize>, name: &str, link: Option<u64>) -> FileState {
        let Some(id) = file_task(name) else {
            return FileState::Missing;
        };
        let now = Instant::now();
        let full = name.ends_with(FULL_SUFFIX);
        let ends = {
            let mut inner = self.lock();
            self.task(&mut inner, id, account)
                .filter(|(_, t)| t.ends <= now && matches!(t.outcome, Outcome::Success))
                .filter(|(_, t)| t.extend || !full)
                .map(|(_, t)| t.ends)
        };
        let Some(ends) = ends else {
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
            Some(ttl) if later(ends, self.config.scaled(ttl)) <= now => FileState::Expired,
            _ => FileState::Ready,
        }
    }

    fn millis_since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// The `download-url` answer: a fresh link to one of this simulator's result
    /// files, valid for `download_link_ttl`; 422 "url is wrong" for any other URL,
    /// and for a file of another account's task.
    pub fn download_url(&self, caller: Caller, url: &str) -> Answer {
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
        match self.file_of(Some(caller.account), name, Some(until)) {
            FileState::Ready => Answer::ok(Value::from(format!("{prefix}{name}?link={until}"))),
            FileState::Missing | FileState::Expired => Answer::err(422, MSG_URL_WRONG),
        }
    }
}

/// The task id in a result file's name (`<id>.mp4`, `<id>-1080p.mp4` ...).
pub(crate) fn file_task(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".mp4")?;
    Some(
        ["-1080p", "-4k", "-origin", "-full"]
            .iter()
            .find_map(|s| stem.strip_suffix(s))
            .unwrap_or(stem),
    )
}
