//! `veo-batch simulate`: flags that set up the simulator, and their resolution
//! into one [`SimConfig`].

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::bail;
use clap::Args;

use super::{DEMO_KEY, Endpoint, ErrorStyle, FaultRate, Faults, Maintenance, SimConfig, SimKey};
use crate::api::{ApiKey, KeyId, KeyRing};
use crate::cost::PriceTable;
use crate::request::{Model, Resolution};
use crate::units::{Rate, Span};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port to listen on, on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,

    /// The API key the simulator accepts (any other key gets the 401 envelope).
    #[arg(long, default_value = DEMO_KEY, value_name = "KEY")]
    pub api_key: String,

    #[command(flatten)]
    pub accounts: Box<AccountArgs>,

    /// Generate calls allowed per window, as N/DURATION, or "none" for no limit.
    #[arg(long, default_value = "20/10s", value_name = "N/DURATION|none")]
    pub rate: RateArg,

    /// record-info calls allowed per window, as N/DURATION, or "none" for no limit
    /// (the documented cap is 10 per second per key). Calls past it answer 429.
    #[arg(long, default_value = "10/1s", value_name = "N/DURATION|none")]
    pub poll_rate: RateArg,

    /// Range the generation time of a task is drawn from, as MIN..MAX.
    #[arg(long, default_value = "60s..300s", value_name = "MIN..MAX")]
    pub generation_time: SpanRange,

    /// The generation time of one kind of task, as MODEL=MIN..MAX or
    /// MODEL:RESOLUTION=MIN..MAX (e.g. veo3:1080p=240s..300s); repeatable. The most
    /// specific one applies; other tasks use --generation-time.
    #[arg(long, value_name = "KIND=MIN..MAX")]
    pub generation_time_for: Vec<KindSpan>,

    /// Multiply every duration by this (generation, rate window, maintenance, slow
    /// answers, upgrades, callback timeout): 0.01 runs an hour in 36 s.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub time_scale: f64,

    /// Starting credit balance.
    #[arg(long, default_value_t = 1_000_000.0, value_name = "N")]
    pub credits: f64,

    /// Bill a price other than the documented table's, as KIND=CREDITS: MODEL:RESOLUTION
    /// (veo3_fast:720p=168), MODEL:RESOLUTION:LENGTH for one video length
    /// (veo3_fast:720p:4s=84), extend:MODEL, upgrade_1080p or upgrade_4k; repeatable.
    #[arg(long, value_name = "KIND=CREDITS")]
    pub price: Vec<PriceArg>,

    /// Keep the charge of a task that fails (by default failed tasks are refunded
    /// when they fail, as documented; some clients report them billed).
    #[arg(long)]
    pub bill_failed: bool,

    /// Seed of every random draw (generation times, faults, task ids).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,

    /// Append one JSON line per request to this file.
    #[arg(long, value_name = "PATH")]
    pub request_log: Option<PathBuf>,

    #[command(flatten)]
    pub faults: Box<FaultArgs>,

    /// How errors are answered: HTTP 200 with the code in the envelope (as the live
    /// service does), or the code as the HTTP status.
    #[arg(long, value_enum, default_value_t = ErrorStyle::Envelope)]
    pub error_style: ErrorStyle,

    /// Do not POST task results to callBackUrl.
    #[arg(long)]
    pub no_callbacks: bool,

    /// Result URLs expire this long after their task ends (they answer 410), or
    /// "none"; `POST /api/v1/common/download-url` gives a fresh link for 20 minutes.
    #[arg(long, default_value = "24h", value_name = "DURATION|none")]
    pub url_ttl: TtlArg,

    /// For this long after a task succeeds, get-1080p-video and get-4k-video answer
    /// 422 "record result data is blank" (as the live service is seen to).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub record_lag: Span,

    /// Uploaded files are forgotten this long after their upload, or "none"; generate
    /// answers 451 for an image URL to a forgotten one.
    #[arg(long, default_value = "24h", value_name = "DURATION|none")]
    pub upload_ttl: TtlArg,
}

/// The accounts flags (boxed so the subcommand enum stays small).
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// More keys the simulator accepts, read from a key file like
    /// `--api-key-file`'s: `ACCOUNT KEY` a line (a bare KEY joins the unnamed
    /// account of --api-key). Each account has its own rate windows and balance.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// A key's usage cap, as KEY_ID=N (the key id printed at start): past N tasks
    /// the key answers 433; repeatable.
    #[arg(long, value_name = "KEY_ID=N")]
    pub key_cap: Vec<NamedCount>,

    /// The starting balance of one account, as ACCOUNT=CREDITS (others start with
    /// --credits); repeatable.
    #[arg(long, value_name = "ACCOUNT=CREDITS")]
    pub account_credits: Vec<NamedCount>,
}

/// `NAME=N`: a key id's cap or an account's balance.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedCount {
    pub name: String,
    pub value: f64,
}

impl FromStr for NamedCount {
    type Err = String;

    fn from_str(s: &str) -> Result<NamedCount, String> {
        let Some((name, value)) = s.split_once('=') else {
            return Err(format!("{s:?} is not NAME=NUMBER"));
        };
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{s:?}: {value:?} is not a number of 0 or more"))?;
        Ok(NamedCount {
            name: name.trim().to_owned(),
            value,
        })
    }
}

/// `--url-ttl`: a duration or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlArg(pub Option<Span>);

impl FromStr for TtlArg {
    type Err = String;

    fn from_str(s: &str) -> Result<TtlArg, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(TtlArg(None));
        }
        s.parse().map(|d| TtlArg(Some(d)))
    }
}

/// The fault-injection flags (boxed so the subcommand enum stays small).
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Probability that a created task fails (successFlag 2 or 3; moderation-like
    /// failures only at the end of the generation time).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fail_rate: f64,

    /// Probability of an injected 429: P for every API endpoint, or ENDPOINT=P
    /// (generate, record-info, get-1080p-video, get-4k-video, credit, files, download-url);
    /// repeatable.
    #[arg(long, value_name = "[ENDPOINT=]P")]
    pub rate_429: Vec<FaultSpec>,

    /// Probability of a 455 (maintenance) answer, like --rate-429.
    #[arg(long, value_name = "[ENDPOINT=]P")]
    pub rate_455: Vec<FaultSpec>,

    /// Probability of a 500 answer, like --rate-429.
    #[arg(long, value_name = "[ENDPOINT=]P")]
    pub rate_500: Vec<FaultSpec>,

    /// A maintenance window, START+LENGTH from the simulator's start (e.g. 30s+60s):
    /// every API call in it answers 455.
    #[arg(long, value_name = "START+LENGTH")]
    pub maintenance: Option<MaintenanceArg>,

    /// Probability that an answer comes only after --slow-delay (a generate call's
    /// task is created first, so a client that times out is left in doubt).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub slow_rate: f64,

    /// How late a slow answer comes.
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub slow_delay: Span,

    /// Probability that a generate call's connection is dropped before a task exists.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop_before_rate: f64,

    /// Probability that a generate call's connection is dropped after its task was
    /// created (and charged): the client cannot know it exists.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop_after_rate: f64,
}

/// `--rate`: a rate or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateArg(pub Option<Rate>);

impl FromStr for RateArg {
    type Err = String;

    fn from_str(s: &str) -> Result<RateArg, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(RateArg(None));
        }
        s.parse().map(|r| RateArg(Some(r)))
    }
}

/// `MIN..MAX`, two durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRange(pub Span, pub Span);

impl FromStr for SpanRange {
    type Err = String;

    fn from_str(s: &str) -> Result<SpanRange, String> {
        let Some((lo, hi)) = s.split_once("..") else {
            // One duration: every task takes exactly that long.
            let d: Span = s.parse()?;
            return Ok(SpanRange(d, d));
        };
        let (lo, hi): (Span, Span) = (lo.parse()?, hi.parse()?);
        if hi < lo {
            return Err(format!("{s:?}: the maximum is below the minimum"));
        }
        Ok(SpanRange(lo, hi))
    }
}

/// `MODEL[:RESOLUTION]=MIN..MAX`: the generation time of one kind of task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSpan {
    pub kind: String,
    pub span: SpanRange,
}

impl FromStr for KindSpan {
    type Err = String;

    fn from_str(s: &str) -> Result<KindSpan, String> {
        let Some((kind, span)) = s.split_once('=') else {
            return Err(format!(
                "{s:?} names no kind of task (write it like veo3=180s..240s or veo3:1080p=4m..5m)"
            ));
        };
        let kind = kind.trim();
        if kind.is_empty() {
            return Err(format!("{s:?}: the model before `=` is empty"));
        }
        Ok(KindSpan {
            kind: kind.to_owned(),
            span: span.parse()?,
        })
    }
}

/// `KIND=CREDITS`: one price the simulator bills instead of the documented one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceArg {
    pub item: PriceItem,
    pub credits: f64,
}

/// What a `--price` sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceItem {
    Generation(Model, Resolution),
    /// One length only (`veo3_fast:720p:4s`).
    GenerationOf(Model, Resolution, u8),
    Extend(Model),
    Upgrade1080p,
    Upgrade4k,
}

impl PriceArg {
    fn apply(self, prices: &mut PriceTable) {
        match self.item {
            PriceItem::Generation(m, r) => prices.set_generation(m, r, self.credits),
            PriceItem::GenerationOf(m, r, d) => prices.set_generation_of(m, r, d, self.credits),
            PriceItem::Extend(m) => prices.set_extend(m, self.credits),
            PriceItem::Upgrade1080p => prices.upgrade_1080p = self.credits,
            PriceItem::Upgrade4k => prices.upgrade_4k = self.credits,
        }
    }
}

impl FromStr for PriceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<PriceArg, String> {
        let usage = "write it like veo3_fast:720p=168, veo3_fast:720p:4s=84, extend:veo3=250, upgrade_1080p=5 or upgrade_4k=120";
        let Some((kind, credits)) = s.split_once('=') else {
            return Err(format!("{s:?} names no price ({usage})"));
        };
        let credits: f64 = credits
            .trim()
            .parse()
            .ok()
            .filter(|c: &f64| c.is_finite() && *c >= 0.0)
            .ok_or_else(|| format!("{s:?}: {credits:?} is not a number of credits of 0 or more"))?;
        let kind = kind.trim();
        let item = match kind.split_once(':') {
            _ if kind == "upgrade_1080p" => PriceItem::Upgrade1080p,
            _ if kind == "upgrade_4k" => PriceItem::Upgrade4k,
            Some(("extend", m)) => PriceItem::Extend(
                Model::parse(m).ok_or_else(|| format!("{s:?}: {m:?} is not a model ({usage})"))?,
            ),
            Some((m, rest)) => {
                let model = Model::parse(m)
                    .ok_or_else(|| format!("{s:?}: {m:?} is not a model ({usage})"))?;
                let (r, seconds) = match rest.split_once(':') {
                    Some((r, d)) => (r, Some(d)),
                    None => (rest, None),
                };
                let resolution = Resolution::parse(r)
                    .ok_or_else(|| format!("{s:?}: {r:?} is not a resolution ({usage})"))?;
                match seconds {
                    None => PriceItem::Generation(model, resolution),
                    Some(d) => {
                        let seconds = d
                            .strip_suffix('s')
                            .and_then(|d| d.parse::<u8>().ok())
                            .filter(|d| crate::cost::SECONDS.contains(d))
                            .ok_or_else(|| {
                                format!("{s:?}: {d:?} is not a length (4s, 6s or 8s; {usage})")
                            })?;
                        PriceItem::GenerationOf(model, resolution, seconds)
                    }
                }
            }
            None => return Err(format!("{s:?}: {kind:?} is not a kind of price ({usage})")),
        };
        Ok(PriceArg { item, credits })
    }
}

/// A probability for all API endpoints, or `ENDPOINT=P` for one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    pub endpoint: Option<Endpoint>,
    pub p: f64,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability (a number from 0 to 1)")),
    }
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultSpec, String> {
        match s.split_once('=') {
            None => Ok(FaultSpec {
                endpoint: None,
                p: probability(s)?,
            }),
            Some((name, p)) => {
                let endpoint = Endpoint::parse(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = Endpoint::ALL.iter().map(|e| e.name()).collect();
                    format!("{name:?} is not an endpoint ({})", names.join(", "))
                })?;
                Ok(FaultSpec {
                    endpoint: Some(endpoint),
                    p: probability(p)?,
                })
            }
        }
    }
}

fn fault_rate(specs: &[FaultSpec]) -> FaultRate {
    let mut rate = FaultRate::default();
    for spec in specs {
        match spec.endpoint {
            None => rate.all = spec.p,
            Some(e) => {
                rate.per_endpoint.insert(e, spec.p);
            }
        }
    }
    rate
}

/// `START+LENGTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceArg(pub Maintenance);

impl FromStr for MaintenanceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<MaintenanceArg, String> {
        let (start, len) = s
            .split_once('+')
            .ok_or_else(|| format!("{s:?} is not a window (write it like 30s+60s)"))?;
        Ok(MaintenanceArg(Maintenance {
            start: start.parse::<Span>()?.0,
            duration: len.parse::<Span>()?.0,
        }))
    }
}

impl SimArgs {
    /// The flags resolved into one validated configuration.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        if !self.time_scale.is_finite() || self.time_scale < 0.0 {
            bail!(
                "--time-scale {} must be a finite number of 0 or more",
                self.time_scale
            );
        }
        if !self.credits.is_finite() {
            bail!("--credits {} must be a finite number", self.credits);
        }
        let f = &self.faults;
        for (flag, p) in [
            ("--fail-rate", f.fail_rate),
            ("--slow-rate", f.slow_rate),
            ("--drop-before-rate", f.drop_before_rate),
            ("--drop-after-rate", f.drop_after_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{flag} {p} is not a probability (a number from 0 to 1)");
            }
        }
        let (keys, api_key_cap) = self.keys()?;
        Ok(SimConfig {
            api_key: self.api_key.clone(),
            api_key_cap,
            keys,
            account_credits: self
                .accounts
                .account_credits
                .iter()
                .map(|a| (a.name.clone(), a.value))
                .collect(),
            rate: self.rate.0,
            poll_rate: self.poll_rate.0,
            generation_time: (self.generation_time.0.0, self.generation_time.1.0),
            generation_time_for: self
                .generation_time_for
                .iter()
                .map(|k| (k.kind.clone(), (k.span.0.0, k.span.1.0)))
                .collect(),
            time_scale: self.time_scale,
            credits: self.credits,
            seed: self.seed,
            request_log: self.request_log.clone(),
            faults: Faults {
                http_429: fault_rate(&f.rate_429),
                http_455: fault_rate(&f.rate_455),
                http_500: fault_rate(&f.rate_500),
                maintenance: f.maintenance.map(|m| m.0),
                maintenance_retry_after: false,
                generation_failure: f.fail_rate,
                slow: f.slow_rate,
                slow_delay: f.slow_delay.0,
                drop_before: f.drop_before_rate,
                drop_after: f.drop_after_rate,
            },
            error_style: self.error_style,
            callbacks: !self.no_callbacks,
            url_ttl: self.url_ttl.0.map(|d| d.0),
            record_lag: self.record_lag.0,
            upload_ttl: self.upload_ttl.0.map(|d| d.0),
            prices: {
                let mut prices = super::service_prices();
                for p in &self.price {
                    p.apply(&mut prices);
                }
                prices
            },
            bill_failed: self.bill_failed,
            ..SimConfig::default()
        })
    }
}

impl SimArgs {
    /// The keys of `--key-file` with their `--key-cap`s, and the cap of `--api-key`.
    fn keys(&self) -> anyhow::Result<(Vec<SimKey>, Option<u64>)> {
        let mut keys: Vec<SimKey> = match &self.accounts.key_file {
            Some(path) => KeyRing::load(Some(path))?
                .keys()
                .iter()
                .map(|k| SimKey::new(k.account.clone(), k.key.expose()))
                .collect(),
            None => Vec::new(),
        };
        let main_id = KeyId::of(&ApiKey::new(self.api_key.clone()));
        let mut main_cap = None;
        for cap in &self.accounts.key_cap {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a whole, non-negative count of tasks"
            )]
            let tasks = cap.value.floor() as u64;
            if cap.name == main_id.as_str() {
                main_cap = Some(tasks);
                continue;
            }
            let Some(key) = keys
                .iter_mut()
                .find(|k| KeyId::of(&ApiKey::new(k.key.clone())).as_str() == cap.name)
            else {
                bail!(
                    "--key-cap {}: no key of --api-key or --key-file has this key id",
                    cap.name
                );
            };
            key.cap = Some(tasks);
        }
        Ok((keys, main_cap))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_are_the_real_service() {
        let config = parse(&[]).unwrap().to_config().unwrap();
        let real = SimConfig::default();
        assert_eq!(config.rate, real.rate);
        assert_eq!(
            config.poll_rate,
            Some(Rate::KIE_POLLS),
            "the documented cap"
        );
        assert_eq!(config.generation_time, real.generation_time);
        assert!(config.generation_time_for.is_empty());
        assert_eq!(config.faults, real.faults);
        assert_eq!(config.api_key, DEMO_KEY);
        assert!(config.callbacks);
        assert_eq!(config.url_ttl, real.url_ttl);
        assert_eq!(config.record_lag, real.record_lag);
        assert_eq!(config.upload_ttl, real.upload_ttl);
    }

    #[test]
    fn every_flag_resolves() {
        let args = parse(&[
            "--port=0",
            "--api-key=k",
            "--rate=none",
            "--poll-rate=5/2s",
            "--generation-time=1s..2s",
            "--generation-time-for=veo3=3s..4s",
            "--generation-time-for=veo3:4k=5s",
            "--time-scale=0.01",
            "--credits=100",
            "--seed=7",
            "--request-log=/tmp/x.jsonl",
            "--fail-rate=0.1",
            "--rate-429=0.2",
            "--rate-429=credit=0",
            "--rate-455=generate=0.3",
            "--rate-500=0.4",
            "--maintenance=30s+60s",
            "--slow-rate=0.5",
            "--slow-delay=90s",
            "--drop-before-rate=0.6",
            "--drop-after-rate=0.7",
            "--error-style=http-status",
            "--no-callbacks",
            "--url-ttl=10m",
            "--record-lag=3s",
            "--upload-ttl=5s",
            "--price=veo3_fast:720p=168",
            "--price=veo3_fast:720p:4s=84",
            "--price=extend:veo3=250.5",
            "--price=upgrade_4k=130",
            "--bill-failed",
        ])
        .unwrap();
        let c = args.to_config().unwrap();
        assert_eq!(
            c.prices.generation(Model::Veo3Fast, Resolution::Hd720),
            Some(168.0)
        );
        assert_eq!(
            c.prices
                .generation_of(Model::Veo3Fast, Resolution::Hd720, 4),
            Some(84.0)
        );
        assert_eq!(
            c.prices
                .generation_of(Model::Veo3Fast, Resolution::Hd720, 8),
            Some(168.0)
        );
        assert!(
            "veo3_fast:720p:5s=1"
                .parse::<PriceArg>()
                .unwrap_err()
                .contains("\"5s\" is not a length")
        );
        assert_eq!(c.prices.extend(Model::Veo3), 250.5);
        assert_eq!(c.prices.upgrade_4k, 130.0);
        assert!(c.bill_failed);
        assert_eq!(c.rate, None);
        assert_eq!(c.poll_rate, Some("5/2s".parse().unwrap()));
        let secs = Duration::from_secs;
        assert_eq!(
            c.generation_time_for,
            [
                ("veo3".to_owned(), (secs(3), secs(4))),
                ("veo3:4k".to_owned(), (secs(5), secs(5)))
            ]
        );
        assert_eq!(
            c.generation_time,
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(c.seed, 7);
        assert!((c.faults.http_429.for_endpoint(Endpoint::Generate) - 0.2).abs() < 1e-9);
        assert!(c.faults.http_429.for_endpoint(Endpoint::Credit).abs() < 1e-9);
        assert!(c.faults.http_455.for_endpoint(Endpoint::RecordInfo).abs() < 1e-9);
        assert!((c.faults.http_455.for_endpoint(Endpoint::Generate) - 0.3).abs() < 1e-9);
        assert_eq!(
            c.faults.maintenance,
            Some(Maintenance {
                start: Duration::from_secs(30),
                duration: Duration::from_secs(60)
            })
        );
        assert_eq!(c.faults.slow_delay, Duration::from_secs(90));
        assert_eq!(c.error_style, ErrorStyle::HttpStatus);
        assert!(!c.callbacks);
        assert_eq!(c.url_ttl, Some(Duration::from_secs(600)));
        assert_eq!(c.record_lag, Duration::from_secs(3));
        assert_eq!(c.upload_ttl, Some(Duration::from_secs(5)));
        let none = parse(&["--url-ttl=none"]).unwrap().to_config().unwrap();
        assert_eq!(none.url_ttl, None);
    }

    #[test]
    fn keys_caps_and_balances_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# pool\nacme-a ka1\nacme-b kb1\nmore\n").unwrap();
        let id = |k: &str| KeyId::of(&ApiKey::new(k)).to_string();
        let args = parse(&[
            "--api-key=main",
            &format!("--key-file={}", file.display()),
            &format!("--key-cap={}=3", id("kb1")),
            &format!("--key-cap={}=1", id("main")),
            "--account-credits=acme-a=500",
        ])
        .unwrap();
        let c = args.to_config().unwrap();
        assert_eq!(
            c.keys,
            [
                SimKey::new("acme-a", "ka1"),
                SimKey::new("acme-b", "kb1").capped(3),
                SimKey::new("", "more"),
            ]
        );
        assert_eq!(c.api_key_cap, Some(1));
        assert_eq!(c.account_credits, [("acme-a".to_owned(), 500.0)]);
        let unknown = parse(&["--key-cap=0000abcd=3"]).unwrap().to_config();
        assert!(
            unknown.unwrap_err().to_string().contains("0000abcd"),
            "names the id"
        );
        assert!(parse(&["--account-credits=acme-a"]).is_err());
        assert!(parse(&["--key-cap=x=-1"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--rate-500=1.5"]).is_err());
        assert!(parse(&["--price=veo3_fast=168"]).is_err());
        assert!(parse(&["--price=veo3:8k=1"]).is_err());
        assert!(parse(&["--price=upgrade_4k=-1"]).is_err());
        assert!(parse(&["--rate-500=upload=0.5"]).is_err());
        assert!(parse(&["--generation-time=5m..1m"]).is_err());
        assert!(parse(&["--maintenance=30s"]).is_err());
        assert!(parse(&["--rate=fast"]).is_err());
        assert!(parse(&["--poll-rate=often"]).is_err());
        assert!(parse(&["--generation-time-for=3s..4s"]).is_err());
        assert!(parse(&["--generation-time-for==3s"]).is_err());
        assert!(parse(&["--time-scale=-1"]).unwrap().to_config().is_err());
        assert!(parse(&["--fail-rate=2"]).unwrap().to_config().is_err());
    }
}
