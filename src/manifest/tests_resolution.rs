//! Tests of the fields and rules of the current API surface: `veo3_lite`,
//! `resolution` and `duration` in every place a field can be written, the upgrade
//! conflicts that would pay twice, the native-resolution hint, and `prices:`.

use tempfile::TempDir;

use super::tests::{ids, ok, problems, write};
use crate::request::{Model, Resolution};

/// The hints or warnings, each without the file part.
fn shown(list: &[super::Diagnostic], path: &std::path::Path) -> Vec<String> {
    let prefix = path.display().to_string();
    list.iter()
        .map(|d| {
            let s = d.to_string();
            s.strip_prefix(&prefix).map(str::to_owned).unwrap_or(s)
        })
        .collect()
}

#[test]
fn resolution_and_duration_from_defaults_jobs_and_matrix() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  model: veo3_lite\n  resolution: 1080p\n  duration: 6\njobs:\n  \
         - id: plain\n    prompt: x\n  \
         - id: hero\n    prompt: y\n    model: veo3\n    resolution: 4k\n    duration: 8\n  \
         - id: cut-{resolution}-{duration}\n    prompt: z\n    matrix:\n      \
         resolution: [720p, 1080p]\n      duration: [4, 8]\n",
    );
    let m = ok(&p);
    assert_eq!(
        ids(&m),
        [
            "plain",
            "hero",
            "cut-720p-4",
            "cut-720p-8",
            "cut-1080p-4",
            "cut-1080p-8"
        ]
    );
    let got: Vec<(Model, Option<Resolution>, Option<u8>)> = m
        .jobs
        .iter()
        .map(|j| (j.request.model, j.request.resolution, j.request.duration))
        .collect();
    assert_eq!(got[0], (Model::Veo3Lite, Some(Resolution::Hd1080), Some(6)));
    assert_eq!(got[1], (Model::Veo3, Some(Resolution::Uhd4k), Some(8)));
    assert_eq!(got[2], (Model::Veo3Lite, Some(Resolution::Hd720), Some(4)));
    assert_eq!(got[5], (Model::Veo3Lite, Some(Resolution::Hd1080), Some(8)));
    assert_eq!(
        m.jobs[0].request.to_body().to_string(),
        r#"{"aspect_ratio":"16:9","duration":6,"generationType":"TEXT_2_VIDEO","model":"veo3_lite","prompt":"x","resolution":"1080p"}"#
    );
}

#[test]
fn resolution_and_duration_as_csv_columns() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "t.csv",
        "id,prompt,model,resolution,duration\na,x,veo3_lite, 1080p ,4\nb,y,,,\n",
    );
    let m = ok(&p);
    assert_eq!(m.jobs[0].request.resolution, Some(Resolution::Hd1080));
    assert_eq!(m.jobs[0].request.duration, Some(4));
    assert_eq!(
        m.jobs[1].request.resolution, None,
        "empty: the service's 720p"
    );
    assert_eq!(m.jobs[1].request.duration, None);
    let bad = write(
        &dir,
        "bad.csv",
        "id,prompt,model,resolution,duration\n\
         a,x,veo3_lite,4k,8s\n\
         b,x,veo3,8k,5\n",
    );
    assert_eq!(
        problems(&bad),
        [
            ":2: job \"a\": duration: \"8s\" is not an integer (a whole number of seconds: 4, 6 or 8)",
            ":2: job \"a\": resolution: veo3_lite has no 4k (720p or 1080p)",
            ":3: job \"b\": resolution: \"8k\" is not allowed (720p, 1080p, 4k)",
            ":3: job \"b\": duration: 5 is not allowed (a whole number of seconds: 4, 6 or 8)",
        ]
    );
}

#[test]
fn every_new_rule_is_located() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "extra:\n  resolution: 1080p\n  duration: 8\njobs:\n  \
         - id: lite-4k\n    prompt: x\n    model: veo3_lite\n    resolution: 4k\n  \
         - id: odd\n    prompt: x\n    resolution: 2k\n    duration: 7\n  \
         - id: typed\n    prompt: x\n    duration: eight\n  \
         - id: refs\n    prompt: x\n    model: veo3\n    generationType: REFERENCE_2_VIDEO\n    \
         imageUrls: [https://a.example/1.png]\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":2:3: resolution: is a request field; set it in defaults: or on jobs, not under extra:",
            ":3:3: duration: is a request field; set it in defaults: or on jobs, not under extra:",
            ":8:17: job \"lite-4k\": resolution: veo3_lite has no 4k (720p or 1080p)",
            ":11:17: job \"odd\": resolution: \"2k\" is not allowed (720p, 1080p, 4k)",
            ":12:15: job \"odd\": duration: 7 is not allowed (a whole number of seconds: 4, 6 or 8)",
            ":15:15: job \"typed\": duration: must be a whole number of seconds: 4, 6 or 8, got text",
            ":18:12: job \"refs\": model: REFERENCE_2_VIDEO works only with veo3_fast or veo3_lite, not veo3",
        ]
    );
}

#[test]
fn upgrades_that_would_pay_twice_are_errors() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  upgrade: 1080p\njobs:\n  \
         - id: twice-4k\n    prompt: x\n    model: veo3\n    resolution: 4k\n    upgrade: 4k\n  \
         - id: hd-on-hd\n    prompt: x\n    resolution: 1080p\n  \
         - id: hd-on-4k\n    prompt: x\n    resolution: 4k\n  \
         - id: fine\n    prompt: x\n    resolution: 1080p\n    upgrade: 4k\n  \
         - id: fine-too\n    prompt: x\n    resolution: 720p\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":2:12: job \"hd-on-hd\": upgrade: 1080p on a video already asked at resolution 1080p \
             pays again for what it has (drop the upgrade)",
            ":2:12: job \"hd-on-4k\": upgrade: 1080p on a video already asked at resolution 4k \
             pays again for what it has (drop the upgrade)",
            ":8:14: job \"twice-4k\": upgrade: 4k on a video already asked at resolution 4k pays \
             twice for it (drop the upgrade)",
        ]
    );
    let csv = write(
        &dir,
        "t.csv",
        "id,prompt,model,resolution,upgrade\na,x,veo3,4k,4k\nb,x,veo3,1080p,none\n",
    );
    assert_eq!(
        problems(&csv),
        [
            ":2: job \"a\": upgrade: 4k on a video already asked at resolution 4k pays twice for it \
          (drop the upgrade)"
        ]
    );
}

#[test]
fn validate_hints_where_the_native_resolution_is_cheaper() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  \
         - id: quality-4k\n    prompt: x\n    model: veo3\n    upgrade: 4k\n  \
         - id: quality-hd\n    prompt: x\n    model: veo3\n    upgrade: 1080p\n  \
         - id: fast-4k\n    prompt: x\n    upgrade: 4k\n  \
         - id: lite-4k\n    prompt: x\n    model: veo3_lite\n    upgrade: 4k\n",
    );
    let m = ok(&p);
    assert_eq!(
        shown(&m.hints, &p),
        [
            // 285 at generation against 225 + 120.
            ":5:14: job \"quality-4k\": upgrade: resolution: 4k at generation costs 285 credits, \
             less than 720p then upgrade: 4k (345 credits; prices: the 2026-09-08 table)",
            // 60 at 720p (not on the page; the other report's) + 120 against 90.
            ":12:14: job \"fast-4k\": upgrade: resolution: 4k at generation costs 90 credits, \
             less than 720p then upgrade: 4k (180 credits; prices: the 2026-09-08 table)",
        ],
        "232.5 for 1080p is more than 225 + 5; lite has no 4k"
    );
}

#[test]
fn prices_by_model_and_resolution() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "prices:\n  veo3_lite: {720p: 12, 1080p: 20.5}\n  veo3_fast: 60\n  upgrade_4k: 100\n  \
         extend: 14\njobs:\n  - id: a\n    prompt: x\n",
    );
    let m = ok(&p);
    let pr = &m.prices;
    assert_eq!(
        pr.generation(Model::Veo3Lite, Resolution::Hd720),
        Some(12.0)
    );
    assert_eq!(
        pr.generation(Model::Veo3Lite, Resolution::Hd1080),
        Some(20.5)
    );
    assert_eq!(pr.generation(Model::Veo3Lite, Resolution::Uhd4k), None);
    for r in Resolution::ALL {
        assert_eq!(pr.generation(Model::Veo3Fast, r), Some(60.0));
    }
    assert_eq!(pr.generation(Model::Veo3, Resolution::Hd1080), Some(232.5));
    assert!((pr.upgrade_4k - 100.0).abs() < 1e-9);
    for m in Model::ALL {
        assert!((pr.extend(m) - 14.0).abs() < 1e-9);
    }
    assert_eq!(
        pr.describe(),
        "the 2026-09-08 table, 7 prices set by the manifest"
    );
    assert!(
        m.warnings.is_empty(),
        "every job is priced: {:?}",
        m.warnings
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "prices:\n  veo3_lite: {4k: 75}\n  veo3_fast: {8k: 1, 720p: free}\n  veo4: 1\n  \
         veo3: -5\njobs:\n  - id: a\n    prompt: x\n",
    );
    assert_eq!(
        problems(&bad),
        [
            ":2:15: veo3_lite.4k: veo3_lite has no 4k, so it has no price",
            ":3:15: veo3_fast.8k: unknown resolution (did you mean 4k?)",
            ":3:28: veo3_fast.720p: must be a number, got text",
            ":4:3: veo4: unknown key in prices (did you mean veo3?)",
            ":5:9: veo3: -5 is not allowed (a number, 0 or more)",
        ]
    );
}

#[test]
fn prices_by_duration_and_the_highest_reported() {
    use crate::cost::Estimate;
    let dir = TempDir::new().unwrap();
    // The 4 s video keeps the price for every length; the 8 s one (the service's
    // default length, asked or not) takes the price set for 8 s.
    let p = write(
        &dir,
        "m.yaml",
        "prices:\n  veo3_fast: {720p: {8s: 168}, 1080p: 40}\n  \
         highest: {veo3_fast: {720p: 300}, extend: {veo3: 400}, upgrade_4k: 200}\n\
         jobs:\n  - id: a\n    prompt: x\n  - id: b\n    prompt: y\n    duration: 8\n  \
         - id: c\n    prompt: z\n    duration: 4\n",
    );
    let m = ok(&p);
    let pr = &m.prices;
    assert_eq!(
        pr.generation_of(Model::Veo3Fast, Resolution::Hd720, 8),
        Some(168.0)
    );
    assert_eq!(
        pr.generation_of(Model::Veo3Fast, Resolution::Hd720, 4),
        Some(60.0)
    );
    assert_eq!(
        pr.generation_of(Model::Veo3Fast, Resolution::Hd1080, 6),
        Some(40.0)
    );
    assert_eq!(Estimate::of(pr, &m.jobs).generation, 168.0 * 2.0 + 60.0);
    assert_eq!(
        pr.highest.generation(Model::Veo3Fast, Resolution::Hd720),
        Some(300.0)
    );
    assert_eq!(pr.highest.extend(Model::Veo3), 400.0);
    assert_eq!(pr.highest.upgrade_4k, 200.0);
    // Unset highs keep the dated defaults.
    assert_eq!(
        pr.highest.generation(Model::Veo3Fast, Resolution::Uhd4k),
        Some(180.0)
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "prices:\n  veo3_fast: {720p: {5s: 1, 8s: lots}}\n  \
         highest: {usd_per_credit: 1, veo3: {720p: {8s: 1}}}\njobs:\n  - id: a\n    prompt: x\n",
    );
    assert_eq!(
        problems(&bad),
        [
            ":2:22: veo3_fast.720p.5s: unknown duration (allowed: 4s, 6s, 8s)",
            ":2:33: veo3_fast.720p.8s: must be a number, got text",
            ":3:13: usd_per_credit: unknown key in prices.highest (allowed: veo3, veo3_fast, \
             veo3_lite, upgrade_1080p, upgrade_4k, extend)",
            ":3:45: highest.veo3.720p: must be a number, got a mapping",
        ]
    );
}

#[test]
fn a_job_without_a_price_is_a_warning_not_a_silent_zero() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: x\n  - id: b\n    prompt: y\n  \
         - id: c\n    prompt: z\n    resolution: 1080p\n",
    );
    let m = ok(&p);
    // The default table prices every model at every resolution it offers.
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    // A table without a cell (a future model, a price left out) warns instead.
    let prices = crate::cost::PriceTable::default().without(
        crate::request::Model::Veo3Fast,
        crate::request::Resolution::Hd720,
    );
    assert_eq!(
        shown(&super::unpriced_warnings(&m.jobs, &prices), &p),
        [
            ":2:5: job \"a\": the price table (the 2026-09-08 table) has no price for veo3_fast at \
          720p: this job and 1 more count as 0 credits in the estimate, and --max-credits cannot \
          be kept; set it under prices: (`veo3_fast: {720p: CREDITS}`)"
        ]
    );
}

/// `Upgrade` is a value of the field table: each of its values, spelled once there, is
/// read wherever a manifest writes `upgrade` (a YAML job, its defaults, a matrix, a CSV
/// column, in any case), placed on the job and priced; a value it does not declare is
/// refused with the ones it does. (The results column has its own test in
/// `checkpoint::schema`.)
#[test]
fn every_upgrade_value_is_read_placed_and_priced() {
    use crate::cost::PriceTable;
    use crate::request::Upgrade;

    let prices = PriceTable::default();
    let mut priced = Vec::new();
    let dir = TempDir::new().unwrap();
    for u in Upgrade::ALL {
        let s = u.as_str();
        let loud = s.to_uppercase();
        let yaml = write(
            &dir,
            &format!("{s}.yaml"),
            format!(
                "defaults:\n  upgrade: {s}\njobs:\n  - id: by-default\n    prompt: x\n  \
                 - id: own\n    prompt: x\n    upgrade: {loud}\n  \
                 - id: grid-{{upgrade}}\n    prompt: x\n    matrix:\n      \
                 upgrade: [{s}]\n"
            ),
        );
        let m = ok(&yaml);
        assert_eq!(ids(&m), ["by-default", "own", &format!("grid-{s}")]);
        assert!(m.jobs.iter().all(|j| j.upgrade == Some(u)), "{s}: {m:?}");

        let csv = write(
            &dir,
            &format!("{s}.csv"),
            format!("id,prompt,upgrade\na,x,{loud}\n"),
        );
        assert_eq!(ok(&csv).jobs[0].upgrade, Some(u), "{s} from a CSV cell");

        let credits = prices.upgrade(u);
        assert!(credits > 0.0, "{s} has no price");
        priced.push(credits.to_bits());
    }
    priced.sort_unstable();
    priced.dedup();
    assert_eq!(
        priced.len(),
        Upgrade::ALL.len(),
        "two upgrades share one price slot"
    );

    let allowed = format!("({} or none)", Upgrade::ALLOWED);
    let bad = write(&dir, "bad.csv", "id,prompt,upgrade\na,x,8k\n");
    assert_eq!(
        problems(&bad),
        [format!(
            ":2: job \"a\": upgrade: \"8k\" is not allowed {allowed}"
        )]
    );
}
