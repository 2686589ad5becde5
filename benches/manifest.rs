//! Parse + expand + validate of 100,000 jobs, as YAML and as a CSV table.
//!
//! Run: `cargo bench --bench manifest -- --sample-size 10`. Criterion prints the
//! throughput in elements (jobs) per second.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const JOBS: usize = 100_000;

fn yaml(path: &Path) {
    let mut s = String::with_capacity(JOBS * 120);
    s.push_str("name: bench\ndefaults:\n  model: veo3_fast\n  watermark: Bench\njobs:\n");
    for i in 0..JOBS {
        let _ = write!(
            s,
            "  - id: job-{i:06}\n    prompt: \"shot {i}: a red kite over a beach at dusk\"\n    seeds: {}\n",
            10_000 + i % 90_000
        );
        if i % 4 == 0 {
            let _ = writeln!(
                s,
                "    imageUrls: [\"https://assets.example.com/frames/{i}.png\"]"
            );
        }
    }
    if let Err(e) = std::fs::write(path, s) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn csv(path: &Path) {
    let mut s = String::with_capacity(JOBS * 100);
    s.push_str("id,prompt,imageUrls,aspect_ratio,seeds\n");
    for i in 0..JOBS {
        let images = if i % 4 == 0 {
            format!("https://assets.example.com/a/{i}.png|https://assets.example.com/b/{i}.png")
        } else {
            String::new()
        };
        let ratio = if i % 2 == 0 { "16:9" } else { "9:16" };
        let _ = writeln!(
            s,
            "row-{i:06},\"shot {i}, a red kite over a beach\",{images},{ratio},{}",
            10_000 + i % 90_000
        );
    }
    if let Err(e) = std::fs::write(path, s) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn bench(c: &mut Criterion) {
    let dir = match tempfile::TempDir::new() {
        Ok(d) => d,
        Err(e) => panic!("cannot make a temp dir: {e}"),
    };
    let yaml_path = dir.path().join("bench.yaml");
    let csv_path = dir.path().join("bench.csv");
    yaml(&yaml_path);
    csv(&csv_path);

    let mut group = c.benchmark_group("manifest_load_100k");
    group.throughput(Throughput::Elements(JOBS as u64));
    group.bench_function("yaml", |b| {
        b.iter(|| match veo_batch::manifest::load(black_box(&yaml_path)) {
            Ok(m) => assert_eq!(m.jobs.len(), JOBS),
            Err(e) => panic!("{e}: {:?}", e.diagnostics.first()),
        });
    });
    group.bench_function("csv", |b| {
        b.iter(|| match veo_batch::manifest::load(black_box(&csv_path)) {
            Ok(m) => assert_eq!(m.jobs.len(), JOBS),
            Err(e) => panic!("{e}: {:?}", e.diagnostics.first()),
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
