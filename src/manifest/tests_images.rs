//! Tests of local images in manifests: every place an image can be written (YAML
//! lists, `defaults:`, `matrix:`, CSV `|` cells, `image_url_N` columns, included
//! tables), paths relative to the file that names them, the located problems, and
//! fingerprints that follow the file's content, not its path.

use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;

use super::images::TINY_PNG;
use super::tests::{ids, ok, problems, write};
use super::*;

/// Another PNG: [`TINY_PNG`] with bytes after its end.
fn other_png() -> Vec<u8> {
    // Bytes after the end chunk: still a PNG to every reader, another file's hash.
    let mut bytes = TINY_PNG.to_vec();
    bytes.extend_from_slice(b"\0\0\0\0tEXt\x8a\x0b\x1e\x8c");
    bytes
}

#[test]
fn yaml_lists_defaults_and_matrices_take_paths_relative_to_the_manifest() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    write(&dir, "img/a.png", TINY_PNG);
    write(&dir, "img/b.png", other_png());
    let abs = dir.path().join("img/b.png");
    let p = write(
        &dir,
        "m.yaml",
        format!(
            "defaults:\n  imageUrls: [img/a.png]\njobs:\n  \
             - id: from-default\n    prompt: x\n  \
             - id: listed\n    prompt: y\n    imageUrls:\n      - img/a.png\n      - https://a.example/1.png\n  \
             - id: absolute\n    prompt: z\n    imageUrls: [\"{}\", \"file://{}\"]\n  \
             - id: m-{{imageUrls}}\n    prompt: w\n    matrix:\n      imageUrls: [[img/a.png], [img/b.png]]\n",
            abs.display(),
            abs.display()
        ),
    );
    let m = ok(&p);
    let a = dir.path().join("img/a.png");
    let shown = |j: &Job| j.request.image_urls.clone();
    assert_eq!(shown(&m.jobs[0]), [a.display().to_string()]);
    assert_eq!(
        shown(&m.jobs[1]),
        [
            a.display().to_string(),
            "https://a.example/1.png".to_owned()
        ]
    );
    assert_eq!(m.jobs[1].local_images.len(), 1);
    assert_eq!(m.jobs[1].local_images[0].index, 0);
    assert_eq!(m.jobs[2].local_images.len(), 2);
    assert_eq!(
        m.jobs[2].local_images[0].image.sha256, m.jobs[2].local_images[1].image.sha256,
        "a path and a file:// URL of one file"
    );
    assert_eq!(m.jobs[3].local_images[0].image.path, a);
    assert_eq!(m.jobs[4].local_images[0].image.path, abs);
    // One check per file: jobs share the same record of it.
    assert!(Arc::ptr_eq(
        &m.jobs[0].local_images[0].image,
        &m.jobs[1].local_images[0].image
    ));
    // The fingerprint is taken of the content, not of the path.
    assert_eq!(
        m.jobs[0].fingerprint,
        images::fingerprint(&m.jobs[0].request, &m.jobs[0].local_images)
    );
    assert_ne!(m.jobs[0].fingerprint, m.jobs[0].request.fingerprint());
}

#[test]
fn csv_cells_columns_and_included_tables_take_paths_relative_to_the_table() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("tables/shots")).unwrap();
    std::fs::create_dir_all(dir.path().join("art")).unwrap();
    write(&dir, "tables/shots/a.png", TINY_PNG);
    write(&dir, "art/b.png", other_png());
    write(
        &dir,
        "tables/list.csv",
        "id,prompt,imageUrls\nl1,x,shots/a.png | https://a.example/1.png\nl2,y,\n",
    );
    write(
        &dir,
        "tables/cols.csv",
        "id,prompt,image_url_1,image_url_2\nc1,x,shots/a.png,shots/a.png\n",
    );
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  imageUrls: [art/b.png]\ninclude:\n  - tables/list.csv\n  - tables/cols.csv\n",
    );
    let m = ok(&p);
    let a = dir.path().join("tables/shots/a.png");
    let b = dir.path().join("art/b.png");
    let paths = |j: &Job| -> Vec<PathBuf> {
        j.local_images
            .iter()
            .map(|l| l.image.path.clone())
            .collect()
    };
    assert_eq!(ids(&m), ["l1", "l2", "c1"]);
    assert_eq!(paths(&m.jobs[0]), std::slice::from_ref(&a));
    assert_eq!(paths(&m.jobs[1]), [b], "a default is relative to the YAML");
    assert_eq!(paths(&m.jobs[2]), [a.clone(), a]);

    // A CSV manifest of its own: relative to the table.
    let p = write(&dir, "tables/own.csv", "prompt,image_urls\nx,shots/a.png\n");
    let m = ok(&p);
    assert_eq!(m.jobs[0].local_images.len(), 1);
    // A derived id comes from the content, so it survives moving the folder.
    assert_eq!(&m.jobs[0].id[4..], &m.jobs[0].fingerprint[..12]);
}

#[test]
fn bad_local_images_are_located_and_nothing_is_kept() {
    let dir = TempDir::new().unwrap();
    write(&dir, "fake.png", "<html>not an image</html>");
    write(&dir, "big.png", {
        let mut b = TINY_PNG.to_vec();
        b.resize(3000, 0);
        b
    });
    std::fs::create_dir(dir.path().join("folder.png")).unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: x\n    imageUrls:\n      - missing.png\n      - fake.png\n  \
         - id: b\n    prompt: y\n    imageUrls: [big.png]\n  \
         - id: c\n    prompt: z\n    imageUrls: [folder.png]\n  \
         - id: d\n    prompt: w\n    imageUrls: [ftp://a.example/x.png]\n",
    );
    let e = load_with(
        &p,
        LoadOptions {
            max_image_bytes: 2000,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    let got: Vec<String> = e
        .diagnostics
        .iter()
        .map(|d| {
            let s = d.to_string();
            s.strip_prefix(&p.display().to_string())
                .map(str::to_owned)
                .unwrap_or(s)
        })
        .collect();
    let missing = dir.path().join("missing.png");
    assert_eq!(
        got,
        [
            format!(
                ":5:9: job \"a\": imageUrls: \"missing.png\" names no file (looked for `{}`: an \
                 entry that is not an http(s) URL is a local image, its path relative to the \
                 file that names it)",
                missing.display()
            ),
            ":6:9: job \"a\": imageUrls: \"fake.png\" is not a PNG, JPEG or WebP image (judged \
             by its content, not its name)"
                .to_owned(),
            ":9:17: job \"b\": imageUrls: \"big.png\" is 2.9 KiB, over the 2.0 KiB limit for a \
             local image (--max-image-size)"
                .to_owned(),
            ":12:17: job \"c\": imageUrls: \"folder.png\" is a directory, not an image file"
                .to_owned(),
            ":15:17: job \"d\": imageUrls: \"ftp://a.example/x.png\" is not http or https (an \
             absolute http or https URL)"
                .to_owned(),
        ]
    );
    // Under the default cap the big file is fine.
    assert!(!problems(&p).iter().any(|l| l.contains("big.png")));
}

#[cfg(unix)]
#[test]
fn an_unreadable_image_is_located() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let img = write(&dir, "locked.png", TINY_PNG);
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&img).is_ok() {
        eprintln!("skipped: running as root, chmod does not stop reads");
        return;
    }
    let p = write(&dir, "m.csv", "id,prompt,image_url_1\na,x,locked.png\n");
    assert_eq!(
        problems(&p),
        [":2: job \"a\": imageUrls: \"locked.png\" cannot be read: permission denied"]
    );
}

#[test]
fn the_fingerprint_follows_the_content_not_the_path() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.png", TINY_PNG);
    let manifest = "id,prompt,image_url_1\nj,x,a.png\n";
    let p = write(&dir, "m.csv", manifest);
    let first = ok(&p).jobs[0].fingerprint.clone();
    // The same bytes under another name and in another folder: the same request.
    std::fs::create_dir(dir.path().join("moved")).unwrap();
    write(&dir, "moved/renamed.png", TINY_PNG);
    let p2 = write(
        &dir,
        "m2.csv",
        "id,prompt,image_url_1\nj,x,moved/renamed.png\n",
    );
    assert_eq!(ok(&p2).jobs[0].fingerprint, first);
    // New content at the same path: an edit.
    write(&dir, "a.png", other_png());
    assert_ne!(ok(&p).jobs[0].fingerprint, first);
    // Jobs with http(s) images only keep their fingerprints exactly.
    let p3 = write(
        &dir,
        "m3.csv",
        "id,prompt,image_url_1\nj,x,https://a.example/1.png\n",
    );
    let j = &ok(&p3).jobs[0];
    assert_eq!(j.fingerprint, j.request.fingerprint());
    assert!(j.local_images.is_empty());
}

#[test]
fn images_outside_the_manifests_folder_are_refused_unless_allowed() {
    let top = TempDir::new().unwrap();
    let home = top.path().join("campaign");
    let photos = top.path().join("photos");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::write(photos.join("me.png"), TINY_PNG).unwrap();
    std::fs::write(home.join("ok.png"), TINY_PNG).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&photos, home.join("link")).unwrap();
    let me = photos.join("me.png");
    let entries = [
        "../photos/me.png".to_owned(),
        me.display().to_string(),
        format!("file://{}", me.display()),
        "link/me.png".to_owned(),
    ];
    let yaml = |head: &str| {
        let mut s = format!("{head}jobs:\n  - id: fine\n    prompt: p\n    imageUrls: [ok.png]\n");
        for (i, e) in entries.iter().enumerate() {
            if cfg!(not(unix)) && e.starts_with("link") {
                continue;
            }
            s.push_str(&format!(
                "  - id: j{i}\n    prompt: p\n    imageUrls: [\"{e}\"]\n"
            ));
        }
        s
    };
    let p = home.join("m.yaml");
    std::fs::write(&p, yaml("")).unwrap();
    let got = problems(&p);
    let expected = if cfg!(unix) { 4 } else { 3 };
    assert_eq!(got.len(), expected, "{got:#?}");
    for (i, g) in got.iter().enumerate() {
        assert!(
            g.contains(&format!("job \"j{i}\": imageUrls: ")),
            "located at the job's entry: {g}"
        );
        assert!(
            g.contains("is outside the folders local images may come from"),
            "{g}"
        );
        assert!(g.contains("--allow-images-from"), "{g}");
    }
    #[cfg(unix)]
    assert!(got[3].contains("it leads to"), "{}", got[3]);

    // Widened by a flag...
    let widened = LoadOptions {
        image_roots: Some(vec![photos.clone()]),
        ..LoadOptions::default()
    };
    let m = load_with(&p, widened).unwrap();
    assert_eq!(m.jobs.len(), expected + 1);
    // ...or by the manifest, relative to its folder.
    std::fs::write(&p, yaml("allow_images_from: [../photos]\n")).unwrap();
    assert_eq!(ok(&p).jobs.len(), expected + 1);
    // A command that sends nothing reads what a run was allowed to.
    std::fs::write(&p, yaml("")).unwrap();
    assert!(load_with(&p, LoadOptions::sending_nothing()).is_ok());
}

#[test]
fn placeholders_fill_image_paths_so_each_colour_gets_its_own_packshot() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("shots")).unwrap();
    write(&dir, "shots/ember.png", TINY_PNG);
    write(&dir, "shots/sky.png", other_png());
    let p = write(
        &dir,
        "m.yaml",
        "defaults:\n  generationType: FIRST_AND_LAST_FRAMES_2_VIDEO\njobs:\n  \
         - id: spot-{colour}\n    prompt: a {colour} shoe\n    imageUrls: [\"shots/{colour}.png\"]\n    \
         matrix:\n      colour: [ember, sky]\n",
    );
    let m = ok(&p);
    assert_eq!(ids(&m), ["spot-ember", "spot-sky"]);
    let path = |j: usize| m.jobs[j].local_images[0].image.path.clone();
    assert_eq!(path(0), dir.path().join("shots/ember.png"));
    assert_eq!(path(1), dir.path().join("shots/sky.png"));
    assert_ne!(m.jobs[0].fingerprint, m.jobs[1].fingerprint);

    // A placeholder no matrix key fills is located at its entry.
    let p = write(
        &dir,
        "bad.yaml",
        "jobs:\n  - id: spot-{colour}\n    prompt: p\n    imageUrls:\n      - shots/{color}.png\n    \
         matrix:\n      colour: [ember, sky]\n",
    );
    let got = problems(&p);
    assert!(
        got.iter().any(|g| g.contains(
            ":5:9: job \"spot-{colour}\": imageUrls: unknown placeholder {color} (the matrix has: colour"
        )),
        "{got:#?}"
    );
}

#[test]
fn an_unquoted_brace_in_a_flow_list_gets_a_hint_to_quote_it() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "m.yaml",
        "jobs:\n  - id: a-{colour}\n    prompt: x\n    imageUrls: [shots/{colour}.png]\n    \
         matrix:\n      colour: [ember, sky]\n",
    );
    let got = problems(&p);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with(":4:"), "{got:?}");
    assert!(
        got[0].contains("a `{` inside a [...] list starts a YAML mapping: quote the entry"),
        "{got:?}"
    );
    let p = write(
        &dir,
        "n.yaml",
        "jobs:\n  - id: a-{colour}\n    prompt: x\n    imageUrls: [a.png, {colour}]\n    \
         matrix:\n      colour: [ember, sky]\n",
    );
    let got = problems(&p);
    assert!(
        got.iter().any(|g| g.contains(
            "imageUrls: must be text, got a mapping (unquoted, {colour} is a YAML mapping: write \"{colour}\" in quotes)"
        )),
        "{got:#?}"
    );
}
