//! The embedded kie.ai simulator: an HTTP server that behaves like the real service
//! (paths, envelope, codes, rate limit, credits, task lifecycle, faults), so the
//! whole pipeline runs, is tested and is demonstrated without the real one.
//!
//! This file owns the configuration, the accept loop and the handle; `state` owns
//! tasks, credits, the rate window and every random draw; `handlers` owns the HTTP
//! surface.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cost::PriceTable;
use crate::request::{Model, Resolution};
use crate::units::Rate;

pub mod args;
mod files;
mod handlers;
mod http;
mod state;
mod uploads;

/// The key `veo-batch run --simulate` and `veo-batch simulate` accept by default.
pub const DEMO_KEY: &str = "sim-key";

/// The playable MP4 every result URL serves.
pub const SAMPLE_MP4: &[u8] = include_bytes!("assets/sample.mp4");

/// The stitched video of extend task `task_id` (its `fullResultUrls` file): the
/// sample followed by an MP4 `free` box naming the task, which players skip. It is
/// longer than any segment and differs from task to task, so that a test can tell
/// the kept file is the stitched one.
pub fn stitched_mp4(task_id: &str) -> Vec<u8> {
    let text = format!("veo-batch simulator: the stitched video of extend task {task_id}");
    let size = u32::try_from(8 + text.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(SAMPLE_MP4.len() + 8 + text.len());
    out.extend_from_slice(SAMPLE_MP4);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(b"free");
    out.extend_from_slice(text.as_bytes());
    out
}

/// How the simulator behaves. `Default` is the realistic service at real speed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The first key of the unnamed account.
    pub api_key: String,
    /// Tasks `api_key` may create before it answers 433; `None`: no cap.
    pub api_key_cap: Option<u64>,
    /// More keys, of the unnamed account (`""`) or of named ones: each account
    /// has its own rate windows and balance.
    pub keys: Vec<SimKey>,
    /// Starting balances of accounts that do not start with `credits`, by name.
    pub account_credits: Vec<(String, f64)>,
    /// Generate calls allowed per window; `None` for no limit.
    pub rate: Option<Rate>,
    /// record-info calls allowed per window (the documented 10 per second per key);
    /// `None` for no limit. Off in `Default`, on in [`SimConfig::demo`] and in
    /// `veo-batch simulate`.
    pub poll_rate: Option<Rate>,
    /// Generation time is drawn from this range (before time scaling).
    pub generation_time: (Duration, Duration),
    /// The range of one kind of task instead, by `model` or `model:resolution` (the
    /// more specific wins).
    pub generation_time_for: Vec<(String, (Duration, Duration))>,
    /// Every duration is multiplied by this (0.01: an hour in 36 s).
    pub time_scale: f64,
    pub credits: f64,
    pub seed: u64,
    pub request_log: Option<PathBuf>,
    /// The 1080p video is ready this long after the task succeeds (drawn, scaled).
    pub upgrade_1080p_time: (Duration, Duration),
    /// A 4K upgrade takes this long from its first request (drawn, scaled).
    pub upgrade_4k_time: (Duration, Duration),
    /// What generation, extends and upgrades cost (upgrades are charged when made,
    /// and answer 402 when the balance is short).
    pub prices: PriceTable,
    /// Failed tasks keep their charge (the service is reported to bill some);
    /// otherwise they are refunded when they fail, as documented.
    pub bill_failed: bool,
    pub faults: Faults,
    pub error_style: ErrorStyle,
    /// POST the end of a task to its `callBackUrl`.
    pub callbacks: bool,
    /// How long one callback delivery may take (scaled); three tries at most.
    pub callback_timeout: Duration,
    /// For this long after a task succeeds (scaled), its upgrade endpoints answer
    /// 422 "record result data is blank", as the live service is seen to.
    pub record_lag: Duration,
    /// Result URLs stop answering (410) this long after their task ends (scaled);
    /// `None`: never.
    pub url_ttl: Option<Duration>,
    /// A link from `download-url` works this long (scaled).
    pub download_link_ttl: Duration,
    /// Uploaded files are forgotten this long after their upload (scaled); an image
    /// URL to a forgotten one makes generate answer 451. `None`: never.
    pub upload_ttl: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            api_key: DEMO_KEY.to_owned(),
            api_key_cap: None,
            keys: Vec::new(),
            account_credits: Vec::new(),
            rate: Some(Rate::KIE_DEFAULT),
            poll_rate: None,
            generation_time: (Duration::from_secs(60), Duration::from_secs(300)),
            generation_time_for: Vec::new(),
            time_scale: 1.0,
            credits: 1_000_000.0,
            seed: 1,
            request_log: None,
            upgrade_1080p_time: (Duration::from_secs(60), Duration::from_secs(180)),
            upgrade_4k_time: (Duration::from_secs(300), Duration::from_secs(600)),
            prices: service_prices(),
            bill_failed: false,
            faults: Faults::default(),
            error_style: ErrorStyle::Envelope,
            callbacks: true,
            callback_timeout: Duration::from_secs(15),
            record_lag: Duration::from_secs(10),
            url_ttl: Some(Duration::from_secs(24 * 60 * 60)),
            download_link_ttl: Duration::from_secs(20 * 60),
            upload_ttl: Some(Duration::from_secs(24 * 60 * 60)),
        }
    }
}

/// One more key the simulator accepts, of `account` (`""`: the unnamed account
/// [`SimConfig::api_key`] belongs to).
#[derive(Clone, PartialEq, Eq)]
pub struct SimKey {
    pub account: String,
    pub key: String,
    /// Tasks (generate and extend) the key may create before it answers 433.
    pub cap: Option<u64>,
}

impl SimKey {
    pub fn new(account: impl Into<String>, key: impl Into<String>) -> SimKey {
        SimKey {
            account: account.into(),
            key: key.into(),
            cap: None,
        }
    }

    /// The key answers 433 once it has created `tasks` tasks.
    #[must_use]
    pub fn capped(mut self, tasks: u64) -> SimKey {
        self.cap = Some(tasks);
        self
    }
}

impl std::fmt::Debug for SimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKey")
            .field("account", &self.account)
            .field(
                "key_id",
                &crate::api::KeyId::of(&crate::api::ApiKey::new(self.key.clone())),
            )
            .field("cap", &self.cap)
            .finish()
    }
}

/// What the simulated service charges: the dated table, plus 60 credits for
/// veo3_fast at 720p, which that table does not list (60 is the other 2026 report's
/// price, and the one this simulator has always charged).
pub fn service_prices() -> PriceTable {
    let mut prices = PriceTable::default();
    prices.set_generation(Model::Veo3Fast, Resolution::Hd720, 60.0);
    prices.overrides = 0;
    prices
}

impl SimConfig {
    /// The realistic service, 50 times faster: what `veo-batch run --simulate` talks to.
    pub fn demo() -> SimConfig {
        SimConfig {
            time_scale: 0.02,
            api_key: DEMO_KEY.to_owned(),
            poll_rate: Some(Rate::KIE_POLLS),
            ..SimConfig::default()
        }
    }

    /// The range the generation time of a `model` task at `resolution` is drawn from.
    pub fn generation_time_of(&self, model: &str, resolution: &str) -> (Duration, Duration) {
        let find = |kind: &str| {
            self.generation_time_for
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, r)| *r)
        };
        find(&format!("{model}:{resolution}"))
            .or_else(|| find(model))
            .unwrap_or(self.generation_time)
    }

    /// `d` after time scaling, capped at ten years so that no deadline overflows.
    pub fn scaled(&self, d: Duration) -> Duration {
        const CAP: f64 = 10.0 * 365.0 * 86_400.0;
        let secs = d.as_secs_f64() * self.time_scale;
        if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs.min(CAP))
        } else {
            Duration::ZERO
        }
    }
}

/// How error answers are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ErrorStyle {
    /// HTTP 200 with the real code in the envelope, as the live service often does.
    #[default]
    Envelope,
    /// The HTTP status is the code (401, 429, 455 ...), with the envelope as the body.
    HttpStatus,
}

/// The API endpoints, for per-endpoint faults, the request log and the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Generate,
    Extend,
    RecordInfo,
    Get1080p,
    Get4k,
    Credit,
    Files,
    DownloadUrl,
    /// `POST /api/file-stream-upload`, on the upload host.
    Upload,
}

impl Endpoint {
    pub const ALL: [Endpoint; 9] = [
        Endpoint::Generate,
        Endpoint::Extend,
        Endpoint::RecordInfo,
        Endpoint::Get1080p,
        Endpoint::Get4k,
        Endpoint::Credit,
        Endpoint::Files,
        Endpoint::DownloadUrl,
        Endpoint::Upload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Extend => "extend",
            Endpoint::RecordInfo => "record-info",
            Endpoint::Get1080p => "get-1080p-video",
            Endpoint::Get4k => "get-4k-video",
            Endpoint::Credit => "credit",
            Endpoint::Files => "files",
            Endpoint::DownloadUrl => "download-url",
            Endpoint::Upload => "file-stream-upload",
        }
    }

    pub fn parse(s: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// A probability for every API endpoint, with per-endpoint overrides.
/// `all` does not apply to `files` (result URLs live on another host for real).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRate {
    pub all: f64,
    pub per_endpoint: BTreeMap<Endpoint, f64>,
}

impl FaultRate {
    pub fn everywhere(p: f64) -> FaultRate {
        FaultRate {
            all: p,
            per_endpoint: BTreeMap::new(),
        }
    }

    pub fn only(endpoint: Endpoint, p: f64) -> FaultRate {
        FaultRate {
            all: 0.0,
            per_endpoint: BTreeMap::from([(endpoint, p)]),
        }
    }

    pub fn for_endpoint(&self, e: Endpoint) -> f64 {
        match self.per_endpoint.get(&e) {
            Some(p) => *p,
            None if e == Endpoint::Files => 0.0,
            None => self.all,
        }
    }
}

/// A window, counted from the simulator's start, in which every API call answers 455.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    pub start: Duration,
    pub duration: Duration,
}

/// Injected faults; all off by default. Draws use the seeded generator, so a run
/// with the same seed and the same sequence of calls sees the same faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub http_429: FaultRate,
    pub http_455: FaultRate,
    pub http_500: FaultRate,
    pub maintenance: Option<Maintenance>,
    /// The maintenance window's 455s carry `Retry-After`: the whole seconds left in
    /// the window, at least 1. kie.ai sends none, so the runner waits its own
    /// maintenance floor; a test that needs a window but not that floor's real 30 s
    /// sets this, and the runner's documented path for a sent `Retry-After` answers.
    pub maintenance_retry_after: bool,
    /// Probability that a created task ends failed (successFlag 2 or 3).
    pub generation_failure: f64,
    /// Probability that an answer comes only after `slow_delay` (scaled).
    pub slow: f64,
    pub slow_delay: Duration,
    /// Probability that a generate call loses its connection before a task exists.
    pub drop_before: f64,
    /// Probability that a generate call loses its connection after its task was created.
    pub drop_after: f64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            http_429: FaultRate::default(),
            http_455: FaultRate::default(),
            http_500: FaultRate::default(),
            maintenance: None,
            maintenance_retry_after: false,
            generation_failure: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(120),
            drop_before: 0.0,
            drop_after: 0.0,
        }
    }
}

/// A snapshot of what the simulator has seen and done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Tasks created per request fingerprint (`GenerateRequest::fingerprint`).
    pub tasks_by_fingerprint: BTreeMap<String, u32>,
    pub tasks_created: u64,
    /// Generate calls that got past the user-agent check.
    pub generate_calls: u64,
    /// Answers with code 429 (rate windows and injected).
    pub answered_429: u64,
    /// record-info calls refused with 429 by the poll limit.
    pub polls_refused: u64,
    /// Answers per code (HTTP 403 from the "CDN" counts as 403).
    pub codes: BTreeMap<i64, u64>,
    /// Connections dropped on purpose.
    pub dropped: u64,
    /// The balances of every account together.
    pub credits: f64,
    /// The balance of each account, by name (`""`: the unnamed one).
    pub credits_by_account: BTreeMap<String, f64>,
    /// Tasks created per account, by name (`""`: the unnamed one).
    pub tasks_by_account: BTreeMap<String, u64>,
    /// Answers with code 433: a key past its own usage cap.
    pub answered_433: u64,
    /// Calls naming a task of another account than the key's ("record is null").
    pub foreign_task_calls: u64,
    /// Requests per account (`""`: the unnamed one) and endpoint name, counted
    /// once the key is known.
    pub requests_by_account: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Requests per endpoint name.
    pub requests: BTreeMap<&'static str, u64>,
    /// Callbacks delivered (a 2xx answer from the receiver).
    pub callbacks_delivered: u64,
    /// Files stored by the upload host, per file name, and how often.
    pub uploads: BTreeMap<String, u32>,
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    sim: Arc<state::Sim>,
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds `credits` to the balance, as a top-up on the account does.
    pub fn top_up(&self, credits: f64) {
        self.sim.top_up(credits);
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            uploads: self.sim.uploads.counts(),
            ..self.sim.stats()
        }
    }

    /// Stops accepting, drops every open connection and pending timer.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.accept.await;
    }
}

/// Starts the simulator on `bind` (port 0 for any free port).
pub async fn start(config: SimConfig, bind: SocketAddr) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("failed to bind the simulator to {bind}"))?;
    let mut addr = listener
        .local_addr()
        .context("failed to read the simulator's bound address")?;
    let stop = CancellationToken::new();
    let log = match &config.request_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("failed to open the request log `{}`", path.display()))?,
        ),
        None => None,
    };
    // Result URLs must point somewhere a client can reach.
    let url_addr = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    let sim = Arc::new(state::Sim::new(
        config,
        format!("http://{url_addr}"),
        log,
        stop.clone(),
    ));
    let router = handlers::router(sim.clone());
    let accept = tokio::spawn(accept_loop(listener, router, stop.clone()));
    if addr.ip().is_unspecified() {
        addr = url_addr;
    }
    Ok(SimHandle {
        addr,
        sim,
        stop,
        accept,
    })
}

/// A per-connection token a handler cancels to drop its own connection mid-request.
#[derive(Clone)]
pub(crate) struct Kill(pub CancellationToken);

/// Our own accept loop rather than `axum::serve`, because a handler must be able to
/// drop its connection without answering (the "in doubt" case of a real client).
async fn accept_loop(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("simulator failed to accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let kill = stop.child_token();
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(Kill(kill.clone()))));
        tokio::spawn(async move {
            // The timer arms hyper's header-read timeout, so idle half-open
            // connections do not pile up.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("simulator connection ended: {e}");
                },
                () = kill.cancelled() => {}
            }
        });
    }
}

/// `veo-batch simulate`: serves until Ctrl-C or SIGTERM.
pub async fn serve(args: args::SimArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    if !config.keys.is_empty() || config.api_key_cap.is_some() {
        // The key ids, never the keys: what --key-cap and a pool's results name.
        let main = SimKey {
            account: String::new(),
            key: config.api_key.clone(),
            cap: config.api_key_cap,
        };
        for k in std::iter::once(&main).chain(&config.keys) {
            let id = crate::api::KeyId::of(&crate::api::ApiKey::new(k.key.clone()));
            let account = if k.account.is_empty() {
                "(unnamed)"
            } else {
                &k.account
            };
            let cap = k
                .cap
                .map(|c| format!(", capped at {c} tasks"))
                .unwrap_or_default();
            eprintln!("account {account}: key {id}{cap}");
        }
    }
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    let handle = start(config, bind).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", handle.base_url())
            .and_then(|()| out.flush())
            .context("failed to print the simulator's address")?;
    }
    wait_for_stop().await;
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_multiplies_and_never_overflows() {
        let c = SimConfig {
            time_scale: 0.01,
            ..SimConfig::default()
        };
        assert_eq!(c.scaled(Duration::from_secs(3600)), Duration::from_secs(36));
        let huge = SimConfig {
            time_scale: 1e300,
            ..SimConfig::default()
        };
        assert!(huge.scaled(Duration::from_secs(1)) < Duration::from_secs(400_000_000));
        let zero = SimConfig {
            time_scale: 0.0,
            ..SimConfig::default()
        };
        assert_eq!(zero.scaled(Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn fault_rates_per_endpoint() {
        let mut f = FaultRate::everywhere(0.5);
        f.per_endpoint.insert(Endpoint::Credit, 0.0);
        assert!((f.for_endpoint(Endpoint::Generate) - 0.5).abs() < 1e-9);
        assert!(f.for_endpoint(Endpoint::Credit).abs() < 1e-9);
        assert!(f.for_endpoint(Endpoint::Files).abs() < 1e-9);
        let g = FaultRate::only(Endpoint::Generate, 1.0);
        assert!(g.for_endpoint(Endpoint::RecordInfo).abs() < 1e-9);
    }

    #[test]
    fn demo_is_time_scaled_default() {
        let d = SimConfig::demo();
        assert_eq!(d.api_key, DEMO_KEY);
        assert!((d.time_scale - 0.02).abs() < 1e-12);
        assert_eq!(d.rate, Some(Rate::KIE_DEFAULT));
        assert_eq!(d.poll_rate, Some(Rate::KIE_POLLS));
    }

    #[test]
    fn sample_is_an_mp4() {
        assert_eq!(&SAMPLE_MP4[4..8], b"ftyp");
    }
}
