//! `veo-batch validate`: exit codes, the exact located messages for broken manifests,
//! the summary, and `--emit jsonl`.

use std::process::{Command, Output};

use assert_cmd::assert::OutputAssertExt as _;

/// `veo-batch validate ARGS` from the crate's folder, with a cleared environment.
fn validate_cmd(args: &[&str]) -> Command {
    let mut cmd = crate::harness::veo_batch();
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("validate")
        .args(args);
    cmd
}

fn validate(args: &[&str]) -> Output {
    match validate_cmd(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run veo-batch: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `validate` on a broken fixture and checks it exits 2, prints nothing on stdout,
/// and exactly `expected` (plus the closing error line) on stderr.
fn assert_problems(fixture: &str, expected: &[&str]) {
    let path = format!("tests/fixtures/manifests/{fixture}");
    let n = expected.len();
    let mut want: String = expected.iter().map(|l| format!("{l}\n")).collect();
    want.push_str(&format!(
        "error: manifest `{path}` has {n} problem{}\n",
        if n == 1 { "" } else { "s" }
    ));
    validate_cmd(&[&path])
        .assert()
        .code(2)
        .stdout("")
        .stderr(want);
}

#[test]
fn campaign_is_valid_and_summarised() {
    let out = validate(&["manifests/campaign.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    insta::assert_snapshot!("campaign_summary", text(&out.stdout));
}

#[test]
fn prompts_csv_is_valid() {
    let out = validate(&["manifests/prompts.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("manifest manifests/prompts.csv: batch \"prompts\", 8 jobs\n"),
        "{stdout}"
    );
    assert!(stdout.contains("REFERENCE_2_VIDEO"), "{stdout}");
}

#[test]
fn emit_jsonl_prints_one_body_per_job_and_the_summary_on_stderr() {
    let out = validate(&["manifests/campaign.yaml", "--emit", "jsonl"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let bodies: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(bodies.len(), 18);
    for b in &bodies {
        assert!(b["prompt"].is_string(), "{b}");
        assert!(b.get("image_urls").is_none(), "API spelling only: {b}");
    }
    assert_eq!(bodies[0]["model"], "veo3");
    assert_eq!(bodies[0]["seeds"], 24681);
    // The extend's body is the extend endpoint's: its model spelled that way, and
    // its parent's task named, as it is known only once that video is made.
    let extend = &bodies[3];
    assert_eq!(
        extend["taskId"], "(the task of job \"spot-ridge\")",
        "{extend}"
    );
    assert_eq!(extend["model"], "fast");
    assert!(extend.get("aspect_ratio").is_none() && extend.get("duration").is_none());
    assert!(text(&out.stderr).contains("18 jobs"));
}

#[test]
fn missing_manifest_is_named() {
    validate_cmd(&["manifests/nope.yaml"])
        .assert()
        .code(2)
        .stderr(
            "manifests/nope.yaml: cannot read the manifest: no such file\n\
             error: manifest `manifests/nope.yaml` has 1 problem\n",
        );
}

#[test]
fn unknown_extension_is_refused() {
    validate_cmd(&["Cargo.toml"]).assert().code(2).stderr(
        "Cargo.toml: is not a manifest: its name must end in .yaml, .yml or .csv\n\
             error: manifest `Cargo.toml` has 1 problem\n",
    );
}

#[test]
fn every_field_problem_is_located() {
    let f = "tests/fixtures/manifests/bad-fields.yaml";
    let lines = [
        format!(
            "{f}:7:5: job \"typo\": aspectRatio: unknown key in a job (did you mean aspect_ratio?)"
        ),
        format!("{f}:9:13: job \"bad-values\": prompt: must not be blank"),
        format!(
            "{f}:10:12: job \"bad-values\": model: \"veo4\" is not allowed (veo3, veo3_fast, veo3_lite)"
        ),
        format!(
            "{f}:11:12: job \"bad-values\": seeds: 123 is out of range (an integer from 10000 to 99999)"
        ),
        format!(
            "{f}:12:18: job \"bad-values\": callBackUrl: \"/hooks/veo\" is not a valid URL (an absolute http or https URL)"
        ),
        format!(
            "{f}:15:12: job \"bad-types\": seeds: must be an integer from 10000 to 99999, got text"
        ),
        format!("{f}:16:24: job \"bad-types\": enableTranslation: must be true or false, got text"),
        format!(
            "{f}:20:12: job \"bad-images\": model: REFERENCE_2_VIDEO works only with veo3_fast or veo3_lite, not veo3"
        ),
        format!(
            "{f}:21:19: job \"bad-images\": aspect_ratio: REFERENCE_2_VIDEO takes 16:9 or 9:16, not Auto"
        ),
        format!(
            "{f}:24:9: job \"bad-images\": imageUrls: \"ftp://assets.example.com/cat.png\" is not http or https (an absolute http or https URL)"
        ),
        format!(
            "{f}:27:16: job \"too-many\": imageUrls: 3 images need generationType REFERENCE_2_VIDEO (without it, 0 images mean TEXT_2_VIDEO and 1-2 mean FIRST_AND_LAST_FRAMES_2_VIDEO)"
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems("bad-fields.yaml", &refs);
}

#[test]
fn expansion_problems_are_located() {
    let f = "tests/fixtures/manifests/bad-expansion.yaml";
    let lines = [
        format!(
            "{f}:3:9: job \"spot\": id: \"spot\" would be the same for several matrix combinations; add {{color}} to it"
        ),
        format!(
            "{f}:8:13: job \"ad-{{color}}\": prompt: unknown placeholder {{colour}} (the matrix has: color; write {{{{ for a literal brace)"
        ),
        format!(
            "{f}:8:13: job \"ad-{{color}}\": prompt: unknown placeholder {{place}} (the matrix has: color; write {{{{ for a literal brace)"
        ),
        format!(
            "{f}:14:12: job \"takes\": seeds: a list of 3 seeds needs repeat: 3 (one seed per copy)"
        ),
        format!(
            "{f}:19:7: job \"unused-{{x}}\": aspectRatio: matrix key is not used: it is not a request field and no {{aspectRatio}} placeholder in id, prompt or imageUrls uses it (did you mean aspect_ratio?)"
        ),
        format!(
            "{f}:22:9: job \"same\": id: duplicate id \"same\", first used at {f}:20:9 (ids must be unique)"
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems("bad-expansion.yaml", &refs);
}

#[test]
fn settings_problems_are_located() {
    let f = "tests/fixtures/manifests/bad-settings.yaml";
    let lines = [
        format!("{f}:3:9: rate: \"fast\" is not a rate (write it like 20/10s or 5/s)"),
        format!("{f}:4:3: concurency: unknown key in run (did you mean concurrency?)"),
        format!("{f}:5:17: task_timeout: \"30\" has no unit (write it like 30s or 30ms)"),
        format!("{f}:7:9: veo3: -5 is not allowed (a number, 0 or more)"),
        format!(
            "{f}:9:3: model: is a request field; set it in defaults: or on jobs, not under extra:"
        ),
        // A first-class field since the API grew it: no longer an extra.
        format!(
            "{f}:10:3: resolution: is a request field; set it in defaults: or on jobs, not under extra:"
        ),
        format!("{f}:12:3: result: unknown key in output (did you mean results?)"),
        format!("{f}:13:1: jobz: unknown key in the manifest (did you mean jobs?)"),
        format!("{f}:17:14: job \"ok\": upgrade: \"8k\" is not allowed (1080p, 4k or none)"),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems("bad-settings.yaml", &refs);
}

#[test]
fn csv_problems_are_located_at_the_physical_line() {
    // The first row spans lines 2-3 (a quoted line break), and the file ends lines
    // with CRLF: the later rows must still be reported at their real lines.
    let f = "tests/fixtures/manifests/bad-rows.csv";
    let lines = [
        format!("{f}:1: aspectRatio: unknown column (did you mean aspect_ratio?)"),
        format!(
            "{f}:4: job \"r2\": seeds: \"abc\" is not an integer (an integer from 10000 to 99999)"
        ),
        format!(
            "{f}:4: job \"r2\": enableTranslation: \"maybe\" is not a boolean (true, false, yes, no, 1 or 0)"
        ),
        format!(
            "{f}:5: this row has 2 cells but the header has 5 (quote cells that contain commas or line breaks)"
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems("bad-rows.csv", &refs);
}

#[test]
fn includes_are_checked() {
    let f = "tests/fixtures/manifests/missing-include.yaml";
    let lines = [
        format!("{f}:6:5: include: cannot read tests/fixtures/manifests/nowhere.csv: no such file"),
        format!(
            "{f}:7:5: include: \"notes.txt\" is not a CSV table (only .csv files can be included)"
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_problems("missing-include.yaml", &refs);
}

#[test]
fn invalid_utf8_is_located_not_a_panic() {
    assert_problems(
        "bad-utf8.yaml",
        &[
            "tests/fixtures/manifests/bad-utf8.yaml:4:16: is not valid UTF-8 (save the file as UTF-8)",
        ],
    );
    assert_problems(
        "bad-utf8.csv",
        &[
            "tests/fixtures/manifests/bad-utf8.csv:3: prompt: is not valid UTF-8 at byte 4 of the cell (save the file as UTF-8)",
        ],
    );
}

#[test]
fn alias_bomb_is_refused() {
    let out = validate(&["tests/fixtures/manifests/alias-bomb.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("tests/fixtures/manifests/alias-bomb.yaml:6:29: refused: the YAML is too large or too deeply nested to read safely"),
        "{stderr}"
    );
}

#[test]
fn deprecated_fallback_warns_but_passes() {
    let out = validate(&["tests/fixtures/manifests/fallback.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "warning: tests/fixtures/manifests/fallback.yaml:3:19: job \"one\": enableFallback: is deprecated and ignored by the service; remove it (and 1 more job)\n"
    );
    assert!(text(&out.stdout).contains("2 jobs"));
}

/// `--jobs` lists every expanded job with its video file, one per line (the summary
/// of a small manifest lists them anyway).
#[test]
fn jobs_lists_the_expanded_ids_and_their_files() {
    let out = validate(&["manifests/campaign.yaml", "--jobs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let listed: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "jobs:")
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed.len(), 18, "{stdout}");
    assert!(stdout.contains("(extends spot-ridge)"), "{stdout}");
    assert!(listed.contains(&"colour-ember-16:9"), "{stdout}");
    assert!(
        stdout.contains("colour-ember-16_9.mp4") && stdout.contains("(+hero-sunrise-1080p.mp4)"),
        "{stdout}"
    );
}
