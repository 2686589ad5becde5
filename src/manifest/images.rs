//! Local images: `imageUrls` entries that name files on this machine instead of
//! http(s) URLs. Each is resolved against the file that names it, checked (a regular,
//! readable PNG, JPEG or WebP by its content, under the size cap) and hashed once per
//! manifest, however many jobs use it. A job's request shows the file's path (what
//! `validate --emit jsonl` and `run --dry-run` print); its fingerprint takes the file's
//! content hash in that place (`local:sha256:<hex>`), never the path or the temporary
//! URL of an upload, so that uploading again never makes a job look edited while a
//! change to the file's content does.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::request::GenerateRequest;
use crate::units::Size;

/// The largest local image accepted by default: 8 MiB. The kie.ai docs give no limit
/// for uploads or for generate's images; the one published limit for Veo 3.1 input
/// images (another host's, for Lite) is 8 MB. A 4K photo saved as JPEG fits; a file
/// past it is a camera original the service would scale down anyway, and sending it
/// costs upload time before a refusal could come. `--max-image-size` changes it.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 8 << 20;

/// The image formats generate takes, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
}

impl ImageKind {
    /// The format of an image that starts with `bytes`, if it is one of ours.
    pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageKind::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageKind::Webp)
        } else {
            None
        }
    }

    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Png => "PNG",
            ImageKind::Jpeg => "JPEG",
            ImageKind::Webp => "WebP",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Webp => "webp",
        }
    }
}

/// A local image file, checked when the manifest was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// The file, as it is opened: resolved against the file that named it.
    pub path: PathBuf,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
    pub size: u64,
    pub kind: ImageKind,
    /// Its size in pixels, as its header gives it.
    pub width: u32,
    pub height: u32,
}

impl LocalImage {
    /// What stands for the image in the fingerprinted body.
    pub fn token(&self) -> String {
        format!("local:sha256:{}", self.sha256)
    }

    /// The name it is uploaded under: its content hash, so that an upload of the
    /// same name (which the service overwrites) is always the same bytes.
    pub fn upload_name(&self) -> String {
        format!("{}.{}", self.sha256, self.kind.extension())
    }

    /// How the request shows it.
    pub fn shown(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The file's bytes read again (just before an upload), when they are still the
    /// bytes that were checked; otherwise why not, to fail its jobs with.
    pub fn read_again(&self) -> Result<Vec<u8>, String> {
        let path = self.path.display();
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "local image `{path}` is gone: it was there when the manifest was read \
                     (put it back and run again)"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "local image `{path}` cannot be read any more: {}",
                    super::io_message(&e)
                ));
            }
        };
        if hex(&Sha256::digest(&bytes)) != self.sha256 {
            return Err(format!(
                "local image `{path}` changed since the manifest was read; nothing was sent \
                 (run again to send its jobs with the new image)"
            ));
        }
        Ok(bytes)
    }
}

/// A local image in a job's request: `request.image_urls[index]` shows its path.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRef {
    pub index: usize,
    pub image: Arc<LocalImage>,
}

/// The path a non-URL `imageUrls` entry names, before it is resolved; `None` for an
/// entry with a URL scheme other than `file:` (http and https, and anything else the
/// URL rule refuses). An error for a `file:` URL that names no local path.
pub fn local_entry(entry: &str) -> Option<Result<PathBuf, String>> {
    match reqwest::Url::parse(entry) {
        Ok(u) if u.scheme() == "file" => Some(u.to_file_path().map_err(|()| {
            format!(
                "{entry:?} is a file:// URL that names no local file (write file:///absolute/path)"
            )
        })),
        // One letter is a Windows drive (`C:\shots\a.png`), not a scheme.
        Ok(u) if u.scheme().len() > 1 => None,
        _ => Some(Ok(PathBuf::from(entry))),
    }
}

/// True when `entry` names a local file rather than a URL.
pub fn is_local(entry: &str) -> bool {
    local_entry(entry).is_some()
}

/// The request's fingerprint with each local image's content hash in its place.
pub fn fingerprint(request: &GenerateRequest, local: &[LocalRef]) -> String {
    if local.is_empty() {
        return request.fingerprint();
    }
    let mut hashed = request.clone();
    for l in local {
        if let Some(slot) = hashed.image_urls.get_mut(l.index) {
            *slot = l.image.token();
        }
    }
    hashed.fingerprint()
}

/// Checks local image files, each once per manifest: a file used by a thousand jobs
/// is read and hashed once.
#[derive(Debug)]
pub(crate) struct Images {
    pub max_bytes: u64,
    /// The folders local images must be in (after symbolic links are followed): the
    /// manifest's own, and those the user widened it to. `None` takes images from
    /// anywhere, for commands that send nothing (`status`, `report`).
    pub roots: Option<Vec<PathBuf>>,
    seen: HashMap<PathBuf, Result<Arc<LocalImage>, Problem>>,
}

impl Default for Images {
    fn default() -> Images {
        Images {
            max_bytes: DEFAULT_MAX_IMAGE_BYTES,
            // Set by the loader, which knows the manifest's folder.
            roots: None,
            seen: HashMap::new(),
        }
    }
}

/// The message for an image outside every allowed folder: a manifest received from
/// someone else must not be able to upload files from elsewhere on this machine.
fn outside_message(path: &Path, roots: &[PathBuf]) -> String {
    let shown: Vec<String> = roots
        .iter()
        .map(|r| format!("`{}`", crate::paths::absolute(r).display()))
        .collect();
    format!(
        "is outside the folders local images may come from ({}): `{}`{}; a manifest may \
         only send images from its own folder unless widened on purpose \
         (--allow-images-from DIR, or allow_images_from: [DIR] in the manifest)",
        shown.join(", "),
        crate::paths::absolute(path).display(),
        match std::fs::canonicalize(path) {
            Ok(real) if crate::paths::absolute(path) != real =>
                format!(" (it leads to `{}`)", real.display()),
            _ => String::new(),
        }
    )
}

/// Why a file cannot be used, said after the entry as written.
#[derive(Debug, Clone)]
struct Problem(String);

impl Images {
    /// The image that `entry` (written in a file in `dir`) names, checked; or what is
    /// wrong with it, as a message that starts with the entry as written.
    pub fn check(&mut self, entry: &str, dir: &Path) -> Result<Arc<LocalImage>, String> {
        let path = match local_entry(entry) {
            Some(Ok(p)) => p,
            Some(Err(why)) => return Err(why),
            None => return Err(format!("{entry:?} is not a local file")),
        };
        let path = if path.is_absolute() {
            path
        } else {
            dir.join(path)
        };
        let max = self.max_bytes;
        let roots = self.roots.as_deref();
        // Checked once per file, as the file is: the verdict depends on it alone.
        let found = self.seen.entry(path.clone()).or_insert_with(|| {
            if let Some(roots) = roots
                && !roots
                    .iter()
                    .any(|root| crate::paths::confined(root, &path).is_ok())
            {
                return Err(Problem(outside_message(&path, roots)));
            }
            inspect(&path, max).map(Arc::new)
        });
        found
            .clone()
            .map_err(|Problem(why)| format!("{entry:?} {why}"))
    }
}

/// Reads and checks the file at `path`.
fn inspect(path: &Path, max_bytes: u64) -> Result<LocalImage, Problem> {
    let problem = |s: String| Problem(s);
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(problem(format!(
                "names no file (looked for `{}`: an entry that is not an http(s) URL is a \
                 local image, its path relative to the file that names it)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(problem(format!(
                "cannot be read: {}",
                super::io_message(&e)
            )));
        }
    };
    if meta.is_dir() {
        return Err(problem("is a directory, not an image file".into()));
    }
    if !meta.is_file() {
        return Err(problem(
            "is not a regular file (a local image must be a PNG, JPEG or WebP file)".into(),
        ));
    }
    if meta.len() > max_bytes {
        return Err(problem(format!(
            "is {}, over the {} limit for a local image (--max-image-size)",
            Size(meta.len()),
            Size(max_bytes)
        )));
    }
    if meta.len() == 0 {
        return Err(problem("is empty, not an image".into()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    let read =
        std::fs::File::open(path).and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        return Err(problem(format!(
            "cannot be read: {}",
            super::io_message(&e)
        )));
    }
    if bytes.len() as u64 > max_bytes {
        return Err(problem(format!(
            "is over the {} limit for a local image (--max-image-size)",
            Size(max_bytes)
        )));
    }
    let Some(kind) = ImageKind::sniff(&bytes) else {
        return Err(problem(
            "is not a PNG, JPEG or WebP image (judged by its content, not its name)".into(),
        ));
    };
    let (width, height) = dimensions(kind, &bytes).map_err(|why| {
        problem(format!(
            "starts like a {} image but is not one: {why}",
            kind.name()
        ))
    })?;
    Ok(LocalImage {
        path: path.to_path_buf(),
        sha256: hex(&Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        kind,
        width,
        height,
    })
}

/// The largest width or height taken: JPEG's own limit, past WebP's (16383) and any
/// photo a camera makes; a header claiming more is not an image's.
const MAX_SIDE: usize = 65_535;

/// The width and height an image's header gives, once the header is found to be
/// one: the first bytes alone (which [`ImageKind::sniff`] reads) are easy to fake,
/// and a file that only starts like an image would be uploaded and paid for.
fn dimensions(kind: ImageKind, bytes: &[u8]) -> Result<(u32, u32), String> {
    match kind {
        // The signature is followed by the IHDR chunk: length 13, its name, the size,
        // and a CRC over name and data (which imagesize does not look at).
        ImageKind::Png => {
            let ihdr = bytes.get(8..33).ok_or("its header is cut short")?;
            if ihdr[..8] != *b"\0\0\0\x0dIHDR" {
                return Err("no IHDR chunk follows the PNG signature".into());
            }
            let stored = u32::from_be_bytes([ihdr[21], ihdr[22], ihdr[23], ihdr[24]]);
            if crc32(&ihdr[4..21]) != stored {
                return Err("its IHDR chunk fails its checksum".into());
            }
        }
        ImageKind::Webp => {
            if bytes.get(12..15) != Some(b"VP8".as_slice()) {
                return Err("no VP8 image data follows the WebP header".into());
            }
        }
        ImageKind::Jpeg => {}
    }
    let kind_found = imagesize::image_type(bytes).map_err(|e| format!("{e}"))?;
    let expected = match kind {
        ImageKind::Png => imagesize::ImageType::Png,
        ImageKind::Jpeg => imagesize::ImageType::Jpeg,
        ImageKind::Webp => imagesize::ImageType::Webp,
    };
    if kind_found != expected {
        return Err(format!("its header reads as {kind_found:?}"));
    }
    let size = imagesize::blob_size(bytes).map_err(|e| match e {
        imagesize::ImageError::IoError(_) => "its header is cut short".to_owned(),
        other => format!("its header does not read ({other})"),
    })?;
    let side = |n: usize| {
        u32::try_from(n)
            .ok()
            .filter(|&n| (1..=MAX_SIDE).contains(&(n as usize)))
    };
    match (side(size.width), side(size.height)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!(
            "its header gives a size of {}x{} pixels (each side must be 1 to {MAX_SIDE})",
            size.width, size.height
        )),
    }
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: it runs over 17 bytes per image.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The smallest PNG (1x1, grey), for tests.
#[cfg(test)]
pub(crate) const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3A, 0x7E, 0x9B,
    0x55, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x60, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x01, 0x48, 0xAF, 0xA4, 0x71, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_are_not_urls_are_local() {
        for local in [
            "shoe.png",
            "images/a b.png",
            "/abs/shoe.png",
            "./x:1.png",
            "C:\\shots\\a.png",
            "file:///tmp/a.png",
        ] {
            assert!(is_local(local), "{local}");
        }
        for url in [
            "https://a.example/x.png",
            "HTTP://A.EXAMPLE/x.png",
            "ftp://a.example/x.png",
            "data:image/png;base64,AA",
        ] {
            assert!(!is_local(url), "{url}");
        }
        assert_eq!(
            local_entry("file:///tmp/a.png"),
            Some(Ok(PathBuf::from("/tmp/a.png")))
        );
    }

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(ImageKind::sniff(TINY_PNG), Some(ImageKind::Png));
        assert_eq!(
            ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a"), None);
        assert_eq!(ImageKind::sniff(b"RIFF\x10\0\0\0WAVE"), None);
    }

    #[test]
    fn each_file_is_checked_once_and_problems_start_with_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), TINY_PNG).unwrap();
        std::fs::write(dir.path().join("fake.png"), b"not an image").unwrap();
        std::fs::write(dir.path().join("big.png"), vec![0u8; 2000]).unwrap();
        let mut images = Images {
            max_bytes: 1000,
            ..Images::default()
        };
        let a = images.check("a.png", dir.path()).unwrap();
        assert_eq!(a.kind, ImageKind::Png);
        assert_eq!(a.size, TINY_PNG.len() as u64);
        assert_eq!(a.sha256.len(), 64);
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        let again = images.check("a.png", dir.path()).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "checked once");
        let err = |entry: &str, images: &mut Images| images.check(entry, dir.path()).unwrap_err();
        assert!(
            err("fake.png", &mut images).starts_with("\"fake.png\" is not a PNG, JPEG or WebP")
        );
        assert!(err("big.png", &mut images).contains("is 2.0 KiB, over the 1000 B limit"));
        assert!(err("none.png", &mut images).starts_with("\"none.png\" names no file"));
        assert!(err(".", &mut images).contains("is a directory"));
        assert!(err("file://host/x.png", &mut images).contains("names no local file"));
    }

    #[test]
    fn images_are_checked_by_their_header_not_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut text_png = b"\x89PNG\r\n\x1a\n".to_vec();
        text_png.extend_from_slice(b"this is a text file that only starts like a PNG\n");
        let mut bad_crc = TINY_PNG.to_vec();
        bad_crc[20] ^= 1;
        let mut zero = TINY_PNG.to_vec();
        // A width of 0, with its checksum made right: the size itself is refused.
        zero[16..20].copy_from_slice(&[0, 0, 0, 0]);
        let crc = crc32(&zero[12..29]).to_be_bytes();
        zero[29..33].copy_from_slice(&crc);
        let cases: [(&str, &[u8], &str); 6] = [
            (
                "text.png",
                &text_png,
                "no IHDR chunk follows the PNG signature",
            ),
            ("cut.png", &TINY_PNG[..20], "its header is cut short"),
            ("crc.png", &bad_crc, "fails its checksum"),
            ("zero.png", &zero, "a size of 0x1 pixels"),
            (
                "text.jpg",
                b"\xFF\xD8\xFFthis is text, not a JPEG",
                "starts like a JPEG image but is not one",
            ),
            (
                "text.webp",
                b"RIFF\x10\0\0\0WEBPhello there, text",
                "no VP8 image data",
            ),
        ];
        let mut images = Images::default();
        for (name, bytes, why) in cases {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            let err = images.check(name, dir.path()).unwrap_err();
            assert!(err.starts_with(&format!("{name:?} starts like a")), "{err}");
            assert!(err.contains(why), "{name}: {err}");
        }
        std::fs::write(dir.path().join("a.png"), TINY_PNG).unwrap();
        let a = images.check("a.png", dir.path()).unwrap();
        assert_eq!((a.width, a.height), (1, 1));
        let real = include_bytes!("../../manifests/images/aurora-packshot-ember.png");
        std::fs::write(dir.path().join("real.png"), real).unwrap();
        let real = images.check("real.png", dir.path()).unwrap();
        assert!(real.width > 1 && real.height > 1, "{real:?}");
    }

    #[test]
    fn a_changed_or_vanished_file_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, TINY_PNG).unwrap();
        let a = Images::default().check("a.png", dir.path()).unwrap();
        assert_eq!(a.read_again().unwrap(), TINY_PNG);
        let mut other = TINY_PNG.to_vec();
        other.push(0);
        std::fs::write(&path, &other).unwrap();
        assert!(a.read_again().unwrap_err().contains("changed since"));
        std::fs::remove_file(&path).unwrap();
        assert!(a.read_again().unwrap_err().contains("is gone"));
    }
}
