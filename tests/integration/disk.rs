//! Full disks: a tiny tmpfs for the videos or the results file. Mounting needs
//! root; where the test cannot mount, it says so and checks nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        SmallFs::mount_with(dir, &format!("size={size}"))
    }

    /// A tmpfs mounted at `dir` with mount `options` (`size=8k`, `ro`).
    fn mount_with(dir: &Path, options: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(SmallFs(dir.to_owned()))
        } else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            None
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_videos_disk_loses_no_paid_video() {
    let h = Harness::new(fast_sim());
    let Some(fs) = SmallFs::mount(&h.path("small"), "64k") else {
        return;
    };
    // 7 KB videos: 20 of them do not fit in 64 KiB.
    let manifest = h.write("b.yaml", &text_jobs(20));
    let out = h
        .run_cmd_at(&manifest, &h.path("results.csv"), &fs.0)
        .args(["--rate", "1000/1s"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::JobsFailed as i32),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
    let results = h.results();
    assert_eq!(results.records.len(), 20, "every job is recorded");
    let missing: Vec<_> = results
        .records
        .values()
        .filter(|r| r.video_paths.is_empty())
        .collect();
    assert!(!missing.is_empty(), "the disk did fill up");
    for r in &missing {
        assert_eq!(r.state(), State::Succeeded, "paid for, kept as succeeded");
        assert!(
            r.error_message
                .as_deref()
                .is_some_and(|m| m.contains("download failed")),
            "{r:?}"
        );
    }
    // Whatever is at a final name is whole; nothing half-written is left.
    for entry in std::fs::read_dir(&fs.0).expect("list") {
        let path = entry.expect("entry").path();
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("mp4"),
            "{path:?}"
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            veo_batch::sim::SAMPLE_MP4,
            "{path:?}"
        );
    }

    // With room again, the next run downloads the rest and submits nothing.
    drop(fs);
    let out = h
        .run_cmd_at(&manifest, &h.path("results.csv"), &h.path("small"))
        .args(["--rate", "1000/1s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, 20);
}

#[test]
fn a_full_results_disk_stops_the_run_and_the_file_still_loads() {
    let h = Harness::new(fast_sim());
    let Some(fs) = SmallFs::mount(&h.path("small"), "8k") else {
        return;
    };
    let results = fs.0.join("results.csv");
    let manifest = h.write("b.yaml", &text_jobs(60));
    let out = h
        .run_cmd_at(&manifest, &results, &h.path("videos"))
        .args(["--rate", "1000/1s"])
        .output()
        .expect("runs");
    assert!(!stderr(&out).contains("panicked"));
    assert_ne!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("results file"),
        "says what could not be written: {}",
        stderr(&out)
    );
    let loaded = veo_batch::checkpoint::load(&results)
        .expect("the results file still loads")
        .expect("exists");
    let created_before = h.stats().tasks_created;
    assert!(
        created_before < 60,
        "the run stopped sending when it could not record"
    );

    // Resume from a copy on a disk with room: nothing is submitted twice except
    // jobs that were in doubt.
    let moved = h.path("results.csv");
    std::fs::copy(&results, &moved).expect("copy");
    drop(fs);
    let in_doubt = loaded
        .records
        .values()
        .filter(|r| matches!(r.state(), State::Submitting | State::InDoubt))
        .count();
    let out = h.run(&manifest, &["--resubmit-in-doubt"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let stats = h.stats();
    let twice = stats
        .tasks_by_fingerprint
        .values()
        .filter(|n| **n > 1)
        .count();
    assert!(
        twice <= in_doubt,
        "{twice} jobs paid twice, {in_doubt} were in doubt"
    );
    assert_eq!(stats.tasks_by_fingerprint.len(), 60);
}

#[test]
fn a_videos_folder_that_takes_no_file_stops_the_run_before_anything_is_paid() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    // Read-only: root writes through permission bits, not through a read-only mount.
    let Some(ro) = SmallFs::mount_with(&h.path("ro"), "ro,size=64k") else {
        return;
    };
    // Full: a file takes all its room.
    let Some(full) = SmallFs::mount(&h.path("full"), "16k") else {
        return;
    };
    let mut filler = std::fs::File::create(full.0.join("filler")).expect("filler");
    let _ = std::io::Write::write_all(&mut filler, &[7u8; 64 * 1024]);
    drop(filler);
    for dir in [&ro.0, &full.0] {
        let out = h
            .run_cmd_at(&manifest, &h.path("results.csv"), dir)
            .args(["--rate", "1000/1s"])
            .output()
            .expect("runs");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(Exit::Usage as i32), "{err}");
        assert!(
            err.contains(&format!(
                "the videos folder `{}` cannot take a file",
                dir.display()
            )),
            "{err}"
        );
        assert_eq!(h.stats().generate_calls, 0, "nothing was paid for");
        assert!(!err.contains("panicked"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&full.0)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["filler"], "no probe file is left behind");
}
