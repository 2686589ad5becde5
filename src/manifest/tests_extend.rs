//! Tests of extend jobs in manifests: chains, matrices of extends, what an extend
//! takes from its parent and from `defaults:`, CSV's `extend` column, prices, and
//! every located error (unknown parent, cycles, parents the service cannot extend,
//! fields that do not apply to an extend).

use tempfile::TempDir;

use super::tests::{ids, ok, problems, write};
use super::{Chains, EXTEND_MODE};
use crate::cost::Estimate;
use crate::request::{AspectRatio, Model};

const CHAIN: &str = "\
name: spot
defaults:
  model: veo3_lite
  aspect_ratio: \"9:16\"
  watermark: Brand
jobs:
  - id: hero
    prompt: A trail runner crests a ridge at sunrise
    model: veo3
  - id: hero-part-2
    extend: hero
    prompt: She sprints down the far slope into the valley
  - id: hero-part-3
    extend: hero-part-2
    prompt: She stops at a lake and looks back at the ridge
    seeds: 12345
  - id: other
    prompt: A lighthouse at dusk
";

#[test]
fn a_chain_of_three_takes_its_parents_model_and_the_defaults_that_apply() {
    let dir = TempDir::new().unwrap();
    let m = ok(&write(&dir, "m.yaml", CHAIN));
    assert_eq!(ids(&m), ["hero", "hero-part-2", "hero-part-3", "other"]);
    let parent = |i: usize| {
        m.jobs[i]
            .extend
            .as_ref()
            .map(|e| (e.parent.as_str(), e.parent_index))
    };
    assert_eq!(parent(0), None);
    assert_eq!(parent(1), Some(("hero", 0)));
    assert_eq!(parent(2), Some(("hero-part-2", 1)));
    assert_eq!(parent(3), None);
    // The model is the parent's, down the chain: `defaults:` does not break continuity.
    let models: Vec<Model> = m.jobs.iter().map(|j| j.request.model).collect();
    assert_eq!(
        models,
        [Model::Veo3, Model::Veo3, Model::Veo3, Model::Veo3Lite]
    );
    assert_eq!(m.jobs[2].request.aspect_ratio, AspectRatio::Portrait);
    assert_eq!(m.jobs[1].mode(), EXTEND_MODE);
    assert_eq!(m.jobs[0].mode(), "TEXT_2_VIDEO");
    // The body is the extend endpoint's, with the defaults that apply to it.
    assert_eq!(
        m.jobs[2].body("t2").to_string(),
        r#"{"model":"quality","prompt":"She stops at a lake and looks back at the ridge","seeds":12345,"taskId":"t2","watermark":"Brand"}"#
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let c = Chains::of(&m.jobs);
    assert_eq!(
        (c.chains, c.extends, c.longest),
        (1, 2, 3),
        "one chain, two extends, three videos"
    );
    assert_eq!(c.longest_ids, ["hero", "hero-part-2", "hero-part-3"]);
}

#[test]
fn an_extend_may_set_its_own_model_and_name_a_parent_written_after_it() {
    let dir = TempDir::new().unwrap();
    let m = ok(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: b\n    extend: a\n    prompt: on\n    model: veo3_lite\n  \
         - id: a\n    prompt: base\n    model: veo3\n",
    ));
    assert_eq!(m.jobs[0].request.model, Model::Veo3Lite);
    assert_eq!(m.jobs[0].extend.as_ref().map(|e| e.parent_index), Some(1));
    assert!(
        m.jobs[0]
            .body("t")
            .to_string()
            .contains(r#""model":"lite""#)
    );
}

#[test]
fn the_fingerprint_follows_the_parent_and_its_model() {
    let dir = TempDir::new().unwrap();
    let load = |base_model: &str, parent: &str| {
        let text = format!(
            "jobs:\n  - id: a\n    prompt: base\n    model: {base_model}\n  \
             - id: a2\n    prompt: base\n    model: {base_model}\n  \
             - id: c\n    extend: {parent}\n    prompt: on\n"
        );
        ok(&write(&dir, "m.yaml", text)).jobs[2].fingerprint.clone()
    };
    let first = load("veo3", "a");
    assert_eq!(first, load("veo3", "a"), "stable");
    assert_ne!(
        first,
        load("veo3_fast", "a"),
        "the inherited model is in it"
    );
    assert_ne!(first, load("veo3", "a2"), "another parent");
}

#[test]
fn a_matrix_of_extends_continues_the_matching_expanded_jobs() {
    let dir = TempDir::new().unwrap();
    let m = ok(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: hero-{colour}\n    prompt: a {colour} jacket on a ridge\n    \
         matrix:\n      colour: [red, blue]\n  \
         - id: hero-{colour}-part-2\n    extend: hero-{colour}\n    \
         prompt: the {colour} jacket runs on\n    matrix:\n      colour: [red, blue]\n",
    ));
    assert_eq!(
        ids(&m),
        [
            "hero-red",
            "hero-blue",
            "hero-red-part-2",
            "hero-blue-part-2"
        ]
    );
    let parents: Vec<Option<&str>> = m
        .jobs
        .iter()
        .map(|j| j.extend.as_ref().map(|e| e.parent.as_str()))
        .collect();
    assert_eq!(parents, [None, None, Some("hero-red"), Some("hero-blue")]);
    assert_eq!(m.jobs[3].request.prompt, "the blue jacket runs on");
    let c = Chains::of(&m.jobs);
    assert_eq!((c.chains, c.extends, c.longest), (2, 2, 2));
}

#[test]
fn a_csv_table_has_an_extend_column() {
    let dir = TempDir::new().unwrap();
    let m = ok(&write(
        &dir,
        "m.csv",
        "id,prompt,extend,model\nhero,a runner,,veo3\nhero-2,she runs on,hero,\n",
    ));
    assert_eq!(
        m.jobs[1].extend.as_ref().map(|e| e.parent.as_str()),
        Some("hero")
    );
    assert_eq!(m.jobs[1].request.model, Model::Veo3);
    let errors = problems(&write(
        &dir,
        "bad.csv",
        "id,prompt,extend,aspect_ratio\nhero,a runner,,\nhero-2,she runs on,heor,9:16\n",
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(":3: job \"hero-2\": aspect_ratio: does not apply to an extend job"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(
            ":3: job \"hero-2\": extend: no job \"heor\" in this manifest (did you mean \"hero\"?)"
        ),
        "{errors:?}"
    );
}

#[test]
fn extends_are_priced_from_the_table() {
    let dir = TempDir::new().unwrap();
    let m = ok(&write(&dir, "m.yaml", CHAIN));
    let e = Estimate::of(&m.prices, &m.jobs);
    // hero (veo3 225) and other (lite 15) generate; two quality extends at 225 each.
    assert!((e.generation - 240.0).abs() < 1e-9, "{e:?}");
    assert!((e.extends - 450.0).abs() < 1e-9, "{e:?}");
    assert!((e.total() - 690.0).abs() < 1e-9);
    let m = ok(&write(
        &dir,
        "p.yaml",
        format!("prices:\n  extend: {{veo3: 100}}\n{CHAIN}"),
    ));
    assert!((Estimate::of(&m.prices, &m.jobs).extends - 200.0).abs() < 1e-9);
    assert!((m.prices.extend(Model::Veo3Lite) - 15.0).abs() < 1e-9);
    assert_eq!(
        problems(&write(
            &dir,
            "q.yaml",
            "prices:\n  extend: {veo4: 1}\njobs:\n  - id: a\n    prompt: x\n"
        )),
        [":2:12: extend.veo4: unknown model (did you mean veo3?)"]
    );
}

#[test]
fn an_unknown_parent_is_located_with_a_suggestion() {
    let dir = TempDir::new().unwrap();
    let errors = problems(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: hero\n    prompt: x\n  - id: next\n    extend: heroo\n    prompt: y\n",
    ));
    assert_eq!(
        errors,
        [
            ":5:13: job \"next\": extend: no job \"heroo\" in this manifest (did you mean \"hero\"?); \
          extend: names the id of the job whose video this one continues"
        ]
    );
}

#[test]
fn a_cycle_names_every_job_in_it() {
    let dir = TempDir::new().unwrap();
    let errors = problems(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: base\n    prompt: x\n  \
         - id: a\n    extend: c\n    prompt: y\n  \
         - id: b\n    extend: a\n    prompt: y\n  \
         - id: c\n    extend: b\n    prompt: y\n  \
         - id: self\n    extend: self\n    prompt: y\n",
    ));
    assert_eq!(
        errors,
        [
            ":5:13: job \"a\": extend: these 3 jobs extend each other in a cycle: \"a\" extends \"c\", \
             \"c\" extends \"b\", \"b\" extends \"a\"; a chain starts at a job that generates its video",
            ":14:13: job \"self\": extend: job \"self\" extends itself; a chain starts at a job that \
             generates its video",
        ]
    );
}

#[test]
fn a_parent_the_service_cannot_extend_is_refused() {
    let dir = TempDir::new().unwrap();
    let errors = problems(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: hd\n    prompt: x\n    upgrade: 1080p\n  \
         - id: big\n    prompt: x\n    resolution: 1080p\n  \
         - id: uhd\n    prompt: x\n    upgrade: 4k\n  \
         - id: hd-2\n    extend: hd\n    prompt: y\n  \
         - id: big-2\n    extend: big\n    prompt: y\n  \
         - id: uhd-2\n    extend: uhd\n    prompt: y\n",
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(
            ":12:13: job \"hd-2\": extend: job \"hd\" asks for upgrade: 1080p, and the service \
             cannot extend a video once its 1080p version is made"
        ),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(
            ":15:13: job \"big-2\": extend: job \"big\" is generated at resolution 1080p"
        ),
        "{errors:?}"
    );
}

/// A parent the service cannot extend is reported with the manifest's other
/// problems, not only once they are fixed.
#[test]
fn a_parent_the_service_cannot_extend_is_reported_beside_other_problems() {
    let dir = TempDir::new().unwrap();
    let errors = problems(&write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: hd\n    prompt: x\n    upgrade: 1080p\n  \
         - id: hd-2\n    extend: hd\n    prompt: y\n  \
         - id: other\n    prompt: z\n    duration: 7\n",
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("job \"other\": duration")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("job \"hd-2\": extend: job \"hd\" asks for upgrade: 1080p")),
        "{errors:?}"
    );
}

#[test]
fn fields_that_do_not_apply_are_errors_on_the_job_and_skipped_from_defaults() {
    let dir = TempDir::new().unwrap();
    // From defaults: they do not apply, and the campaign's defaults keep working.
    let m = ok(&write(
        &dir,
        "m.yaml",
        "defaults:\n  aspect_ratio: \"9:16\"\n  resolution: 720p\n  upgrade: 4k\n  \
         duration: 6\n  enableTranslation: false\n  imageUrls: [\"https://a.example/1.png\"]\n\
         jobs:\n  - id: a\n    prompt: x\n  - id: b\n    extend: a\n    prompt: y\n",
    ));
    assert_eq!(m.jobs[1].upgrade, None);
    assert_eq!(
        m.jobs[1].body("t").to_string(),
        r#"{"model":"fast","prompt":"y","taskId":"t"}"#
    );
    // On the job itself: errors, each at its field.
    let errors = problems(&write(
        &dir,
        "bad.yaml",
        "jobs:\n  - id: a\n    prompt: x\n  - id: b\n    extend: a\n    prompt: y\n    \
         imageUrls: [\"https://a.example/1.png\"]\n    aspect_ratio: \"16:9\"\n    \
         resolution: 720p\n    upgrade: 4k\n    generationType: TEXT_2_VIDEO\n    duration: 8\n",
    ));
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").nth(2).unwrap_or_default())
        .collect();
    assert_eq!(
        fields,
        [
            "imageUrls",
            "aspect_ratio",
            "resolution",
            "upgrade",
            "generationType",
            "duration"
        ],
        "{errors:?}"
    );
    assert!(
        errors[0].starts_with(
            ":7:16: job \"b\": imageUrls: does not apply to an extend job: it \
         continues the video of job \"a\""
        ),
        "{errors:?}"
    );
    // One sentence, spaced as one (a broken line continuation once put a run of
    // blanks in the middle of it).
    assert!(
        errors[0].ends_with(
            "it continues the video of job \"a\", and the extend endpoint takes only \
             prompt, model, seeds, callBackUrl and watermark"
        ),
        "{errors:?}"
    );
}

#[test]
fn the_extend_fields_follow_the_generate_rules() {
    let dir = TempDir::new().unwrap();
    let errors = problems(&write(
        &dir,
        "m.yaml",
        "defaults:\n  extend: a\njobs:\n  - id: a\n    prompt: x\n  - id: b\n    extend: a\n    \
         prompt: \" \"\n    model: fast\n    seeds: 5\n  - id: c-{k}\n    extend: a-{m}\n    \
         prompt: y\n    matrix:\n      k: [1]\n",
    ));
    assert_eq!(
        errors,
        [
            ":2:3: extend: cannot be a default (it belongs on each job)",
            ":8:13: job \"b\": prompt: must not be blank",
            ":9:12: job \"b\": model: \"fast\" is not allowed (veo3, veo3_fast, veo3_lite)",
            ":10:12: job \"b\": seeds: 5 is out of range (an integer from 10000 to 99999)",
            ":12:13: job \"c-{k}\": extend: unknown placeholder {m} (the matrix has: k; write {{ for a \
             literal brace)",
        ]
    );
}
