//! The page's cards as one compact JSON block, which the page's script turns into
//! cards only for what is on screen: a batch of 100,000 jobs is a few tens of MB of
//! data, not a DOM of 100,000 cards.
//!
//! The shape (read by `page.js`, which is the only reader):
//! `{"looks":[[key,label,icon],..],"labels":[..],"code":[..],"cards":[card,..],"dict":[..]}`
//! where a card is `[id, look, prompt, note, videos, remote, facts, flags, time]`:
//! `look` indexes `looks`; `videos` is `[[dir, file, label], ..]` (the video's URL is
//! `dir` then `file`); `facts` is `[label, value, label, value, ..]` with `label`
//! indexing `labels` and `value` a text, or a list of `[text, href]` links (`href` 0
//! when the item is no link); `flags` bit 1 is a portrait video; `time` is the sort
//! time when the card has no `Finished` fact. Anywhere a text may stand, a number
//! stands for `dict[number]`: a text that repeats across the batch (a model, a cost,
//! a failure reason, a video folder) is written once.
//!
//! The block sits in `<script type="application/json">`, which the browser never
//! runs; `<`, `>` and `&` are written as `\u003c`, `\u003e`, `\u0026` so that no
//! text in it can close the element. The script writes every text with
//! `textContent`, never as markup.

use std::collections::HashMap;
use std::fmt;

use super::view::{Card, STANDINGS, look};

/// The fact labels a card can carry, in the order the page shows them.
pub(crate) const LABELS: [&str; 16] = [
    "Model",
    "Aspect ratio",
    "Mode",
    "Resolution",
    "Duration",
    "Continues",
    "Seed",
    "Images",
    "Watermark",
    "Upgrade",
    "Task",
    "Attempts",
    "Submitted",
    "Finished",
    "Took",
    "Cost",
];

/// Labels whose values are ids, shown in a fixed-width face.
const CODE: [&str; 2] = ["Mode", "Task"];

/// Labels whose values repeat across a batch, written once in the dictionary.
const SHARED: [&str; 10] = [
    "Model",
    "Aspect ratio",
    "Mode",
    "Resolution",
    "Duration",
    "Watermark",
    "Upgrade",
    "Attempts",
    "Took",
    "Cost",
];

/// At most this many texts are shared: past it, a text is written in place, so a
/// batch whose "repeating" texts are all different holds no table of them.
const DICT_MAX: usize = 1 << 16;

/// Writes cards as JSON, sharing the texts that repeat.
pub(crate) struct Encoder {
    dict: HashMap<String, u32>,
    order: Vec<String>,
    /// One card's JSON, before it is escaped into the page.
    buf: Vec<u8>,
    cards: usize,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            dict: HashMap::new(),
            order: Vec::new(),
            buf: Vec::with_capacity(1024),
            cards: 0,
        }
    }

    /// The start of the block, up to the first card.
    pub fn head(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let looks: Vec<[&str; 3]> = STANDINGS
            .iter()
            .map(|s| {
                let l = look(*s);
                [l.key, l.label, l.icon]
            })
            .collect();
        let code: Vec<usize> = CODE.iter().filter_map(|c| label_index(c)).collect();
        let head = serde_json::json!({ "looks": looks, "labels": LABELS, "code": code });
        let text = head.to_string();
        // The object stays open for the cards.
        let open = text.strip_suffix('}').unwrap_or(&text);
        write_escaped(out, open.as_bytes())?;
        out.write_str(",\"cards\":[")
    }

    /// One card.
    pub fn card(&mut self, card: &Card, out: &mut impl fmt::Write) -> fmt::Result {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if self.cards > 0 {
            buf.push(b',');
        }
        self.cards += 1;
        buf.push(b'[');
        text(&mut buf, &card.id);
        buf.push(b',');
        let look = STANDINGS
            .iter()
            .position(|s| look(*s) == card.look)
            .unwrap_or(0);
        number(&mut buf, look);
        buf.push(b',');
        text(&mut buf, &card.prompt);
        buf.push(b',');
        match &card.note {
            Some(note) => self.shared(&mut buf, note),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",[");
        for (i, v) in card.videos.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            let (dir, file) = match v.src.rfind('/') {
                Some(at) => v.src.split_at(at + 1),
                None => ("", v.src.as_str()),
            };
            buf.push(b'[');
            self.shared(&mut buf, dir);
            buf.push(b',');
            text(&mut buf, file);
            buf.push(b',');
            self.shared(&mut buf, &v.label);
            buf.push(b']');
        }
        buf.extend_from_slice(b"],[");
        for (i, u) in card.remote.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            text(&mut buf, u);
        }
        buf.extend_from_slice(b"],[");
        let mut first = true;
        let mut finished = false;
        for f in &card.facts {
            let Some(label) = label_index(f.label) else {
                continue;
            };
            if !first {
                buf.push(b',');
            }
            first = false;
            finished |= f.label == "Finished";
            number(&mut buf, label);
            buf.push(b',');
            match f.items.as_slice() {
                [one] if one.href.is_none() && f.label != "Images" => {
                    if SHARED.contains(&f.label) {
                        self.shared(&mut buf, &one.text);
                    } else {
                        text(&mut buf, &one.text);
                    }
                }
                items => {
                    buf.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        buf.push(b'[');
                        text(&mut buf, &item.text);
                        buf.push(b',');
                        match &item.href {
                            Some(h) => text(&mut buf, h),
                            None => buf.push(b'0'),
                        }
                        buf.push(b']');
                    }
                    buf.push(b']');
                }
            }
        }
        buf.extend_from_slice(b"],");
        number(&mut buf, usize::from(card.portrait));
        buf.push(b',');
        text(&mut buf, if finished { "" } else { &card.time });
        buf.push(b']');
        let written = write_escaped(out, &buf);
        self.buf = buf;
        written
    }

    /// The end of the block: the shared texts, read once the cards are parsed.
    pub fn tail(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let dict = serde_json::to_string(&self.order).map_err(|_| fmt::Error)?;
        out.write_str("],\"dict\":")?;
        write_escaped(out, dict.as_bytes())?;
        out.write_str("}")
    }

    /// `s` as an index into the shared texts, or in place once the table is full.
    fn shared(&mut self, buf: &mut Vec<u8>, s: &str) {
        if let Some(&i) = self.dict.get(s) {
            return number(buf, i as usize);
        }
        if self.order.len() >= DICT_MAX {
            return text(buf, s);
        }
        let i = self.order.len();
        self.order.push(s.to_owned());
        self.dict
            .insert(s.to_owned(), u32::try_from(i).unwrap_or(u32::MAX));
        number(buf, i);
    }
}

fn label_index(label: &str) -> Option<usize> {
    LABELS.iter().position(|l| *l == label)
}

fn text(buf: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn number(buf: &mut Vec<u8>, n: usize) {
    use std::io::Write as _;
    let _ = write!(buf, "{n}");
}

/// Writes JSON `bytes` with `<`, `>` and `&` as JSON escapes: they can only stand
/// inside strings, where the escape means the same character.
fn write_escaped(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|b| matches!(b, b'<' | b'>' | b'&')) {
        out.write_str(utf8(&rest[..at])?)?;
        out.write_str(match rest[at] {
            b'<' => "\\u003c",
            b'>' => "\\u003e",
            _ => "\\u0026",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(utf8(rest)?)
}

/// The split points are ASCII bytes, so every piece of valid JSON text stays UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str, fmt::Error> {
    std::str::from_utf8(bytes).map_err(|_| fmt::Error)
}
