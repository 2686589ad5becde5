//! Paths read from files stay where they belong: a results file's recorded videos
//! inside the videos folder, a manifest's local images inside the manifest's folder
//! (unless widened on purpose), and a videos folder that cannot take a file is
//! found before anything is paid for.

use std::path::Path;

use veo_batch::checkpoint::{self, Record, State};
use veo_batch::exit::Exit;

use crate::harness::{Harness, fast_sim, stderr};

const VICTIM: &str = "precious words, not a video";

/// Rewrites the results file's record of `job` with `edit`, as a hand edit would.
fn edit_record(h: &Harness, job: &str, edit: impl Fn(&mut Record)) {
    let path = h.path("results.csv");
    let mut loaded = checkpoint::load(&path).expect("loads").expect("exists");
    let rows: Vec<Record> = loaded
        .order
        .iter()
        .map(|id| {
            let mut r = loaded.records.remove(id).expect("record");
            if r.job_id == job {
                edit(&mut r);
            }
            r
        })
        .collect();
    checkpoint::writer::rewrite(&path, &rows).expect("rewrite");
}

fn victim(h: &Harness) -> std::path::PathBuf {
    std::fs::create_dir_all(h.path("victim")).expect("mkdir");
    h.write("victim/important.txt", VICTIM)
}

fn assert_untouched(h: &Harness, victim: &Path) {
    assert_eq!(
        std::fs::read_to_string(victim).expect("the file is still there"),
        VICTIM
    );
    let beside = victim.parent().expect("folder");
    assert!(
        !beside.join("superseded").exists(),
        "nothing was set aside beside it"
    );
    assert_eq!(
        std::fs::read_dir(beside).expect("list").count(),
        1,
        "nothing new beside it"
    );
    let _ = h;
}

fn one_job(prompt: &str) -> String {
    format!("name: b\njobs:\n  - id: a\n    prompt: \"{prompt}\"\n")
}

/// The column (1-based) of `name` in the results file.
fn column(name: &str) -> usize {
    checkpoint::HEADER
        .iter()
        .position(|h| *h == name)
        .expect("column")
        + 1
}

#[test]
fn recorded_paths_outside_the_videos_folder_are_never_moved() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("first"));
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let victim = victim(&h);
    let absolute = victim.display().to_string();
    // Relative (to the results folder), absolute, and through a link that leads out.
    #[cfg(unix)]
    std::os::unix::fs::symlink(h.path("victim"), h.path("videos/link")).expect("symlink");
    for (n, cell) in [
        "victim/important.txt",
        "../victim/important.txt",
        absolute.as_str(),
        "videos/link/important.txt",
    ]
    .into_iter()
    .enumerate()
    {
        if cfg!(not(unix)) && cell.contains("link") {
            continue;
        }
        edit_record(&h, "a", |r| {
            r.video_paths = vec![cell.to_owned()];
            r.superseded_paths = vec![cell.to_owned()];
        });
        // A changed prompt sends the job again: its recorded video is set aside first.
        let manifest = h.write("b.yaml", &one_job(&format!("take {n}")));
        let o = h.run(&manifest, &[]);
        assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
        assert_untouched(&h, &victim);
        let err = stderr(&o);
        let at = format!(
            "results.csv:2: column {} (video_paths)",
            column("video_paths")
        );
        assert!(err.contains(&at), "{cell}: located: {err}");
        let at = format!(
            "results.csv:2: column {} (superseded_paths)",
            column("superseded_paths")
        );
        assert!(err.contains(&at), "{cell}: located: {err}");
        assert!(err.contains("leaves that file alone"), "{err}");
        let r = h.results().records.remove("a").expect("record");
        assert_eq!(r.state(), State::Succeeded);
        assert_eq!(r.video_paths.len(), 1, "{r:?}");
        assert!(r.video_paths[0].ends_with("videos/a.mp4"), "{r:?}");
    }
}

#[test]
fn retry_failed_never_moves_a_recorded_path_outside_the_videos_folder() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("first"));
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let victim = victim(&h);
    edit_record(&h, "a", |r| {
        r.state = Some(State::Failed);
        r.error_message = Some("made up".into());
        r.video_paths = vec![
            "../victim/important.txt".into(),
            "victim/important.txt".into(),
        ];
    });
    let o = h.run(&manifest, &["--retry-failed"]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_untouched(&h, &victim);
    assert!(stderr(&o).contains("(video_paths)"), "{}", stderr(&o));
}

#[test]
fn a_recorded_path_outside_is_downloaded_again_not_generated_again() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("first"));
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let victim = victim(&h);
    std::fs::remove_file(h.path("videos/a.mp4")).expect("rm");
    edit_record(&h, "a", |r| {
        r.video_paths = vec!["victim/important.txt".into()];
    });
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_untouched(&h, &victim);
    assert_eq!(h.stats().tasks_created, 1, "never generated again");
    assert_eq!(
        std::fs::read(h.path("videos/a.mp4")).expect("downloaded again"),
        veo_batch::sim::SAMPLE_MP4
    );
}

/// The campaign's packshot: a real PNG.
const PNG: &[u8] = include_bytes!("../../manifests/images/aurora-packshot-ember.png");

fn image_job(entry: &str) -> String {
    format!(
        "name: b\njobs:\n  - id: a\n    prompt: p\n    generationType: FIRST_AND_LAST_FRAMES_2_VIDEO\n    imageUrls: [\"{entry}\"]\n"
    )
}

#[test]
fn a_manifest_cannot_send_images_from_outside_its_folder() {
    let h = Harness::new(fast_sim());
    std::fs::create_dir_all(h.path("campaign")).expect("mkdir");
    std::fs::create_dir_all(h.path("photos")).expect("mkdir");
    let photo = h.path("photos/me.png");
    std::fs::write(&photo, PNG).expect("photo");
    #[cfg(unix)]
    std::os::unix::fs::symlink(h.path("photos"), h.path("campaign/link")).expect("symlink");
    let mut entries = vec![
        "../photos/me.png".to_owned(),
        photo.display().to_string(),
        format!("file://{}", photo.display()),
    ];
    if cfg!(unix) {
        entries.push("link/me.png".to_owned());
    }
    for entry in &entries {
        let manifest = h.write("campaign/b.yaml", &image_job(entry));
        let o = h.run(&manifest, &[]);
        assert_eq!(
            o.status.code(),
            Some(Exit::Usage as i32),
            "{entry}: {}",
            stderr(&o)
        );
        let err = stderr(&o);
        assert!(err.contains("b.yaml:6:"), "{entry}: located: {err}");
        assert!(
            err.contains("is outside the folders local images may come from"),
            "{err}"
        );
        let stats = h.stats();
        assert_eq!(stats.generate_calls, 0, "nothing sent");
        assert!(stats.uploads.is_empty(), "nothing uploaded");
    }
    // Widened on purpose, by the flag or by the manifest, the image is sent.
    let manifest = h.write("campaign/b.yaml", &image_job("../photos/me.png"));
    let o = h.run(&manifest, &["--allow-images-from", "photos"]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_eq!(h.stats().uploads.len(), 1);
    let manifest = h.write(
        "campaign/b.yaml",
        &format!(
            "allow_images_from: ../photos\n{}",
            image_job("../photos/me.png")
        ),
    );
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
}

#[test]
fn a_file_that_only_starts_like_a_png_is_refused_located() {
    let h = Harness::new(fast_sim());
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend_from_slice(b"Dear diary, today I renamed my notes to shot.png\n");
    std::fs::write(h.path("shot.png"), fake).expect("write");
    let manifest = h.write("b.yaml", &image_job("shot.png"));
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("b.yaml:6:")
            && err.contains("\"shot.png\" starts like a PNG image but is not one"),
        "{err}"
    );
    assert_eq!(h.stats().generate_calls, 0);
    assert!(h.stats().uploads.is_empty());
}

#[test]
fn a_deleted_video_is_shown_missing_and_downloaded_again_not_generated_again() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &crate::harness::text_jobs(2));
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    std::fs::remove_file(h.path("videos/job-1.mp4")).expect("rm");

    let o = h.status(&["results.csv"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "video missing (1 job): recorded as downloaded, and its video file is gone: \"job-1\""
        ),
        "{out}"
    );
    assert!(out.contains("  video missing        1"), "{out}");
    assert_eq!(o.status.code(), Some(Exit::NotFinished as i32), "{out}");
    let o = h.status(&["b.yaml", "--results", "results.csv", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let states: Vec<&str> = json["job_states"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["video_missing", "succeeded"]);

    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("1 job recorded as downloaded has a video file gone from disk (\"job-1\")"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.stats().tasks_created, 2, "never generated again");
    assert_eq!(
        std::fs::read(h.path("videos/job-1.mp4")).expect("downloaded again"),
        veo_batch::sim::SAMPLE_MP4
    );
    let o = h.status(&["results.csv"]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32));
}
