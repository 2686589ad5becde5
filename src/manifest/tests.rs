//! Tests of [`load`] over real files: expansion (defaults, matrix, repeat, include),
//! settings, CSV quirks, id stability, and the located problems of each rule.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::request::{AspectRatio, GenerationType, Model, Resolution};

pub(super) fn write(dir: &TempDir, name: &str, body: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

pub(super) fn ok(path: &Path) -> Manifest {
    match load(path) {
        Ok(m) => m,
        Err(e) => panic!(
            "{e}:\n{}",
            e.diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// The problems, each without the file part (the temp dir differs per run).
pub(super) fn problems(path: &Path) -> Vec<String> {
    let e = load(path).expect_err("the manifest should be refused");
    let prefix = format!("{}", path.display());
    e.diagnostics
        .iter()
        .map(|d| {
            let s = d.to_string();
            s.strip_prefix(&prefix).map(str::to_owned).unwrap_or(s)
        })
        .collect()
}

pub(super) fn ids(m: &Manifest) -> Vec<&str> {
    m.jobs.iter().map(|j| j.id.as_str()).collect()
}

#[test]
fn defaults_apply_unless_a_job_sets_the_field() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "name: demo\ndefaults:\n  model: veo3\n  aspect_ratio: \"9:16\"\n  upgrade: 1080p\njobs:\n  - id: a\n    prompt: one\n  - id: b\n    prompt: two\n    model: veo3_fast\n    upgrade: none\n",
    );
    let m = ok(&p);
    assert_eq!(m.name, "demo");
    assert_eq!(ids(&m), ["a", "b"]);
    assert_eq!(m.jobs[0].request.model, Model::Veo3);
    assert_eq!(m.jobs[0].request.aspect_ratio, AspectRatio::Portrait);
    assert_eq!(m.jobs[0].upgrade, Some(Upgrade::Hd1080));
    assert_eq!(m.jobs[1].request.model, Model::Veo3Fast);
    assert_eq!(m.jobs[1].upgrade, None);
    assert_eq!(m.jobs[0].origin.line, Some(7));
    assert_eq!(m.jobs[0].fingerprint, m.jobs[0].request.fingerprint());
}

#[test]
fn matrix_multiplies_and_fills_placeholders() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: car-{color}-{aspect_ratio}\n    prompt: a {color} car, {{literal}}\n    matrix:\n      color: [red, blue]\n      aspect_ratio: [\"16:9\", \"9:16\"]\n",
    );
    let m = ok(&p);
    assert_eq!(
        ids(&m),
        [
            "car-red-16:9",
            "car-red-9:16",
            "car-blue-16:9",
            "car-blue-9:16"
        ]
    );
    assert_eq!(m.jobs[2].request.prompt, "a blue car, {literal}");
    assert_eq!(m.jobs[1].request.aspect_ratio, AspectRatio::Portrait);
    assert_eq!(
        m.name, "m",
        "a manifest without name: is named after its file"
    );
}

#[test]
fn matrix_fills_a_default_prompt_too() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  prompt: the {product} on a table\njobs:\n  - id: p-{product}\n    matrix:\n      product: [mug, lamp]\n",
    );
    let m = ok(&p);
    assert_eq!(m.jobs[1].request.prompt, "the lamp on a table");
}

#[test]
fn repeat_makes_numbered_copies_with_their_own_seeds() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: take\n    prompt: waves\n    repeat: 3\n    seeds: [11111, 22222, 33333]\n  - id: plain\n    prompt: sky\n    repeat: 2\n",
    );
    let m = ok(&p);
    assert_eq!(
        ids(&m),
        ["take-1", "take-2", "take-3", "plain-1", "plain-2"]
    );
    let seeds: Vec<Option<u32>> = m.jobs.iter().map(|j| j.request.seeds).collect();
    assert_eq!(seeds, [Some(11111), Some(22222), Some(33333), None, None]);
}

#[test]
fn include_adds_csv_rows_with_defaults_and_extra() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "rows.csv",
        "id,prompt,model\nr1,from the table,\nr2,second,veo3\n",
    );
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  model: veo3_fast\n  watermark: Brand\nextra:\n  personGeneration: allow_adult\njobs:\n  - id: y\n    prompt: from yaml\ninclude: rows.csv\n",
    );
    let m = ok(&p);
    assert_eq!(ids(&m), ["y", "r1", "r2"]);
    assert_eq!(
        m.jobs[1].request.model,
        Model::Veo3Fast,
        "empty cell: default"
    );
    assert_eq!(m.jobs[2].request.model, Model::Veo3);
    assert_eq!(m.jobs[1].request.watermark.as_deref(), Some("Brand"));
    assert_eq!(
        m.jobs[2].request.to_body()["personGeneration"],
        "allow_adult"
    );
    assert_eq!(m.jobs[1].origin.file, dir.path().join("rows.csv"));
    assert_eq!(m.jobs[1].origin.line, Some(2));
}

#[test]
fn duplicate_ids_across_yaml_and_include_name_both_places() {
    let dir = TempDir::new().unwrap();
    write(&dir, "rows.csv", "id,prompt\ny,again\n");
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: y\n    prompt: first\ninclude: [rows.csv]\n",
    );
    let e = load(&p).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    let d = e.diagnostics[0].to_string();
    let csv = dir.path().join("rows.csv");
    assert_eq!(
        d,
        format!(
            "{}:2: job \"y\": id: duplicate id \"y\", first used at {}:2:9 (ids must be unique)",
            csv.display(),
            p.display()
        )
    );
}

#[test]
fn settings_are_read() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "run:\n  concurrency: 4\n  rate: 20/10s\n  max_attempts: 3\n  poll_interval: 10s\n  task_timeout: 20m\n  request_timeout: 30s\n  max_credits: 500\noutput:\n  results: out/r.csv\n  videos_dir: out/v\nprices:\n  veo3_fast: 50\n  usd_per_credit: 0.01\njobs:\n  - id: a\n    prompt: x\n",
    );
    let m = ok(&p);
    assert_eq!(m.run.concurrency, Some(4));
    assert_eq!(m.run.rate, Some(crate::units::Rate::KIE_DEFAULT));
    assert_eq!(m.run.max_attempts, Some(3));
    assert_eq!(
        m.run.task_timeout.map(|s| s.0),
        Some(std::time::Duration::from_secs(1200))
    );
    assert_eq!(m.run.max_credits, Some(500.0));
    assert_eq!(m.output.results, Some(dir.path().join("out/r.csv")));
    assert_eq!(m.output.videos_dir, Some(dir.path().join("out/v")));
    for r in Resolution::ALL {
        assert_eq!(m.prices.generation(Model::Veo3Fast, r), Some(50.0), "{r}");
    }
    assert_eq!(
        m.prices.generation(Model::Veo3, Resolution::Hd720),
        Some(225.0),
        "unset prices keep defaults"
    );
}

#[test]
fn ids_with_control_characters_or_outer_spaces_are_refused() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: \"a\\tb\"\n    prompt: x\n  - id: \" padded\"\n    prompt: y\n  - id: \"\"\n    prompt: z\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":2:9: job \"a\\tb\": id: \"a\\tb\" contains the control character U+0009 (use letters, digits, - and _)",
            ":4:9: job \" padded\": id: \" padded\" has leading or trailing spaces (remove them)",
            ":6:9: job \"\": id: must not be blank",
        ]
    );
}

#[test]
fn a_job_without_id_is_refused_in_yaml() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "m.yaml", "jobs:\n  - prompt: x\n");
    assert_eq!(
        problems(&p),
        [
            ":2:5: id: is required (a short unique name: it names the video file and is the resume key)"
        ]
    );
}

#[test]
fn matrix_rules() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a-{r}\n    prompt: x\n    aspect_ratio: \"16:9\"\n    matrix:\n      r: [1, 2]\n      aspect_ratio: [\"9:16\"]\n  - id: b\n    prompt: y\n    matrix:\n      c: []\n  - id: c\n    prompt: z\n    matrix: [1, 2]\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":7:7: job \"a-{r}\": aspect_ratio: is set both on the job and in its matrix; keep one",
            ":11:10: job \"b\": c: has no values (a matrix key needs a list of one or more values)",
            ":14:13: job \"c\": matrix: must be a mapping of names to lists of values, got a list",
        ]
    );
}

#[test]
fn unknown_placeholder_without_a_matrix() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: hello {name}\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":3:13: job \"a\": prompt: unknown placeholder {name} (this job has no matrix; write {{ for a literal brace)"
        ]
    );
}

#[test]
fn huge_expansions_are_refused() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: x\n    repeat: 100001\n",
    );
    assert_eq!(
        problems(&p),
        [":4:13: job \"a\": this job would expand to more than 100000 jobs; split it"]
    );
}

#[test]
fn yaml_type_errors_and_unknown_keys() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  id: nope\n  seed: 12345\njobs:\n  - id: a\n    prompt: [x]\n    imageUrls: https://a.example/1.png\n    keep_original: maybe\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":2:3: id: cannot be a default (it belongs on each job)",
            ":3:3: seed: unknown key in defaults (did you mean seeds?)",
            ":6:13: job \"a\": prompt: must be text, got a list",
            ":7:16: job \"a\": imageUrls: must be a list of image URLs (like [\"https://...\"]), got text",
            ":8:20: job \"a\": keep_original: must be true or false, got text",
        ]
    );
}

#[test]
fn numbers_written_for_text_fields_keep_their_spelling() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: 2024\n    prompt: 1.10\n    watermark: 007\n",
    );
    let m = ok(&p);
    assert_eq!(m.jobs[0].id, "2024");
    assert_eq!(m.jobs[0].request.prompt, "1.10");
    assert_eq!(m.jobs[0].request.watermark.as_deref(), Some("007"));
}

#[test]
fn yaml_syntax_errors_and_empty_files() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "m.yaml", "jobs:\n  - id: a\n   prompt: [x\n");
    let got = problems(&p);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains(": invalid YAML: "), "{got:?}");
    let p = write(&dir, "e.yaml", "");
    assert_eq!(
        problems(&p),
        [":1:1: the manifest is empty (it needs jobs: or include:)"]
    );
    let p = write(&dir, "d.yaml", "jobs: []\n---\njobs: []\n");
    assert_eq!(
        problems(&p),
        [":3:1: a manifest is one YAML document; remove the `---` separators"]
    );
}

#[test]
fn deep_nesting_is_refused() {
    let dir = TempDir::new().unwrap();
    let deep = format!("extra:\n  x: {}{}\n", "[".repeat(200), "]".repeat(200));
    let p = write(&dir, "m.yaml", deep);
    let got = problems(&p);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("refused: the YAML is too large or too deeply nested"),
        "{got:?}"
    );
}

#[test]
fn the_size_cap_and_utf8_positions() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "m.yaml", "jobs: []\n");
    assert!(
        yaml::read_capped(&p, 4)
            .unwrap_err()
            .contains("larger than")
    );
    assert!(yaml::read_capped(&p, 64).is_ok());
    assert_eq!(yaml::line_col(b"ab\ncd"), (2, 3));
    assert_eq!(yaml::line_col("é".as_bytes()), (1, 2));
}

// ---- CSV ------------------------------------------------------------------------

#[test]
fn csv_handles_bom_crlf_quotes_and_multiline_cells() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "t.csv",
        "\u{feff}id,prompt,image_urls,aspect_ratio\r\na,\"line one\r\nline two, with \"\"quotes\"\"\",https://a.example/1.png|https://a.example/2.png,9:16\r\nb,plain,,\r\n",
    );
    let m = ok(&p);
    assert_eq!(m.name, "t");
    assert_eq!(ids(&m), ["a", "b"]);
    assert_eq!(
        m.jobs[0].request.prompt,
        "line one\r\nline two, with \"quotes\""
    );
    assert_eq!(m.jobs[0].request.image_urls.len(), 2);
    assert_eq!(
        m.jobs[0].request.generation_type,
        GenerationType::FirstAndLastFrames
    );
    assert_eq!(m.jobs[1].origin.line, Some(4), "after a two-line row, CRLF");
    assert_eq!(m.jobs[1].request.aspect_ratio, AspectRatio::Landscape);
}

/// A table read alone keeps no per-value places (every value is at its row); an
/// included one keeps them, for its defaults. Both must give the same jobs and the
/// same located problems, on the quirks real exports have.
#[test]
fn a_table_alone_reads_as_the_same_table_included() {
    let dir = TempDir::new().unwrap();
    let good = "\u{feff}id,prompt,image_urls,aspect_ratio,seeds,upgrade,keep_original\r\n\
        a,\"line one\r\nline two, with \"\"quotes\"\"\",https://a.example/1.png| https://a.example/2.png ,9:16,12345,4k,yes\r\n\
        b,plain,,,,,\r\n\
        ,\"no id, \"\"derived\"\"\",https://a.example/3.png,,99999,none,0\r\n";
    let images = "prompt,image_url_1,image_url_2,generation_type\n\
        x,https://a.example/1.png,https://a.example/2.png,\n\
        y,https://a.example/1.png,,FIRST_AND_LAST_FRAMES_2_VIDEO\n";
    let bad = "id,prompt,image_urls,seeds,model,keep_original\n\
        a,x,ftp://a.example/1.png|nope,12,veo4,maybe\n\
        a,\"two\nlines\",,abc,,\n\
        c,,https://a.example/1.png|https://a.example/2.png|https://a.example/3.png,,,\n\
        d,x,y\n\
        ,same,,,,\n\
        ,same,,,,\n";
    for (name, table) in [("good", good), ("images", images), ("bad", bad)] {
        let csv = write(&dir, &format!("{name}.csv"), table);
        let yaml = write(
            &dir,
            &format!("{name}.yaml"),
            format!("include: {name}.csv\n"),
        );
        match (load(&csv), load(&yaml)) {
            (Ok(alone), Ok(included)) => {
                assert_eq!(alone.jobs, included.jobs, "{name}");
                assert!(!alone.jobs.is_empty());
            }
            (Err(alone), Err(included)) => {
                assert_eq!(alone.diagnostics, included.diagnostics, "{name}");
                assert!(alone.diagnostics.len() >= 6, "{:?}", alone.diagnostics);
            }
            (a, i) => panic!("{name}: alone {:?}, included {:?}", a.is_ok(), i.is_ok()),
        }
    }
    let m = ok(&dir.path().join("good.csv"));
    assert_eq!(m.jobs.len(), 3);
    assert_eq!(m.jobs[0].request.image_urls.len(), 2);
    assert_eq!(m.jobs[1].origin.line, Some(4));
    assert_eq!(m.jobs[2].origin.line, Some(5));
    assert!(m.jobs[2].id.starts_with("job-"));
}

#[test]
fn csv_image_columns_aliases_and_bools() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "t.csv",
        "id,Prompt,image_url_1,image_url_2,image_url_3,generation_type,callback_url,enable_translation,keep_original,upgrade\n\
         a,x,https://a.example/1.png,https://a.example/2.png,https://a.example/3.png,REFERENCE_2_VIDEO,https://hooks.example/v,NO,yes,4K\n\
         b,y,https://a.example/1.png,,,,,1,0,\n",
    );
    let m = ok(&p);
    let a = &m.jobs[0];
    assert_eq!(a.request.image_urls.len(), 3);
    assert_eq!(a.request.generation_type, GenerationType::Reference);
    assert_eq!(
        a.request.callback_url.as_deref(),
        Some("https://hooks.example/v")
    );
    assert_eq!(a.request.enable_translation, Some(false));
    assert!(a.keep_original);
    assert_eq!(a.upgrade, Some(Upgrade::Uhd4k));
    assert_eq!(m.jobs[1].request.image_urls.len(), 1);
    assert_eq!(m.jobs[1].request.enable_translation, Some(true));
}

#[test]
fn csv_ids_come_from_content_not_row_position() {
    let dir = TempDir::new().unwrap();
    let a = write(&dir, "a.csv", "prompt,seeds\na dog,12345\na cat,\n");
    let b = write(&dir, "b.csv", "prompt,seeds\na cat,\na dog,12345\n");
    let ma = ok(&a);
    let mb = ok(&b);
    assert_eq!(ma.jobs[0].id, mb.jobs[1].id);
    assert_eq!(ma.jobs[1].id, mb.jobs[0].id);
    assert!(ma.jobs[0].id.starts_with("job-"));
    assert_eq!(ma.jobs[0].id.len(), "job-".len() + 12);
}

#[test]
fn identical_csv_rows_are_duplicates() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "t.csv", "prompt\nsame\nother\nsame\n");
    let m = load(&p).unwrap_err();
    let d = m.diagnostics[0].to_string();
    assert!(
        d.starts_with(&format!("{}:4: job \"job-", p.display())),
        "{d}"
    );
    assert!(
        d.contains(&format!("exactly the same video as {}:2", p.display())),
        "{d}"
    );
}

#[test]
fn csv_header_problems() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "t.csv",
        "id,prompt,imageUrls,image_url_1,image_urls,colour,\nx,y,,,,,\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":1: image_urls: the same column as \"imageUrls\"; keep one of them",
            ":1: colour: unknown column (columns are request fields like prompt, imageUrls, model, aspect_ratio, seeds, or id, upgrade, keep_original, extend, image_url_1..3)",
            ":1: column 7 has no name in the header row",
            ":1: imageUrls: use either an imageUrls column or image_url_1..3 columns, not both",
        ]
    );
}

#[test]
fn csv_unclosed_quote_at_the_end_is_refused() {
    let dir = TempDir::new().unwrap();
    // csv itself ends the cell at the end of the file, swallowing rows b and c.
    let p = write(&dir, "t.csv", "id,prompt\na,\"never closed\nb,x\nc,y\n");
    let found = problems(&p);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(":2: a quoted cell is never closed"),
        "{found:?}"
    );
    // Closed quotes, doubled quotes and a quote inside an unquoted cell are fine.
    let p = write(
        &dir,
        "ok.csv",
        "id,prompt\na,\"say \"\"hi\"\"\nthen go\"\nb,a 5\" screen\n",
    );
    assert_eq!(ok(&p).jobs.len(), 2);
}

#[test]
fn a_huge_unknown_key_is_reported_quickly_and_briefly() {
    let dir = TempDir::new().unwrap();
    let name = "c".repeat(1 << 20);
    let p = write(&dir, "t.csv", format!("id,prompt,{name}\na,b,c\n"));
    let found = problems(&p);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("unknown column"), "{}", &found[0][..100]);
    assert!(found[0].len() < 3000, "{} bytes", found[0].len());
}

#[test]
fn csv_rules_are_the_request_rules() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "t.csv",
        "id,prompt,model,seeds,aspect_ratio,enableFallback\na,x,veo4,5,9:16,true\nb,,,,,\n",
    );
    assert_eq!(
        problems(&p),
        [
            ":2: job \"a\": model: \"veo4\" is not allowed (veo3, veo3_fast, veo3_lite)",
            ":2: job \"a\": seeds: 5 is out of range (an integer from 10000 to 99999)",
            ":2: job \"a\": enableFallback: true requires aspect_ratio 16:9",
            ":3: job \"b\": prompt: is required",
        ]
    );
}

#[test]
fn empty_manifests_have_no_jobs() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "t.csv", "id,prompt\n");
    assert_eq!(problems(&p), [": the manifest has no jobs"]);
}

#[test]
fn an_id_that_is_not_text_is_reported_once() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "m.yaml", "jobs:\n  - id: [a]\n    prompt: x\n");
    assert_eq!(problems(&p), [":2:9: id: must be text, got a list"]);
}

#[test]
fn a_semicolon_separated_table_gets_a_hint_naming_the_delimiter() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "eu.csv", "id;prompt\na;ein Hund im Park\n");
    let said = problems(&p);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with(":1: the header `id;prompt` is separated by semicolons"),
        "{said:?}"
    );
}

#[test]
fn yaml_words_that_yaml_1_1_took_for_booleans_stay_words() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: c-{n}-{y}-{yes}-{no}-{on}-{off}-{True}\n    prompt: \"{on} and {off}\"\n    \
         matrix:\n      n: [1]\n      y: [Y]\n      yes: [yes]\n      no: [No]\n      on: [on]\n      \
         off: [off]\n      True: [TRUE]\n",
    );
    let m = ok(&p);
    assert_eq!(ids(&m), ["c-1-Y-yes-No-on-off-TRUE"]);
    assert_eq!(m.jobs[0].request.prompt, "on and off");

    let p = write(
        &dir,
        "b.yaml",
        "jobs:\n  - id: a\n    prompt: x\n    enableTranslation: yes\n  - id: b\n    prompt: x\n    enableTranslation: True\n",
    );
    let got = problems(&p);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains(
            ":4:24: job \"a\": enableTranslation: must be true or false, got the word \"yes\""
        ),
        "{got:?}"
    );
}
