//! The results file's columns, in one table: each column's name, how a record
//! writes its cell and how a cell sets the record. The header, the row writer and
//! the row reader all walk this table, so a new column is one entry here (and its
//! field on [`Record`]).
//!
//! Columns are only ever added at the end. A file written before a column existed
//! has a header that is a shorter prefix of today's (one per [`VERSIONS`]); it reads with
//! the missing cells empty, and a run rewrites it to today's header before
//! appending to it.

use std::fmt::Write as _;

use super::{ErrorKind, LIST_SEPARATOR, Record, State};
use crate::manifest::Upgrade;

/// A column holding a string field as it is.
macro_rules! text_column {
    ($since:literal, $name:literal, $field:ident) => {
        Column {
            since: $since,
            name: $name,
            write: |r, out| out.push_str(&r.$field),
            read: |r, cell| {
                set(&mut r.$field, cell);
                Ok(())
            },
        }
    };
}

/// A column holding an optional string field (empty: none).
macro_rules! opt_column {
    ($since:literal, $name:literal, $field:ident) => {
        Column {
            since: $since,
            name: $name,
            write: |r, out| out.push_str(r.$field.as_deref().unwrap_or_default()),
            read: |r, cell| {
                set_opt(&mut r.$field, cell);
                Ok(())
            },
        }
    };
}

/// A column holding a list of strings, `|`-separated.
macro_rules! list_column {
    ($since:literal, $name:literal, $field:ident) => {
        Column {
            since: $since,
            name: $name,
            write: |r, out| push_list(out, &r.$field),
            read: |r, cell| {
                set_list(&mut r.$field, cell);
                Ok(())
            },
        }
    };
}

/// One column of the results file.
pub struct Column {
    /// The schema version the column appeared in (see [`VERSIONS`]).
    pub since: usize,
    pub name: &'static str,
    /// Appends the cell of `r` to `out`.
    pub write: fn(&Record, &mut String),
    /// Sets the field of `r` from `cell`, reusing its strings; the problem with the
    /// cell otherwise (a phrase that reads after the column name).
    pub read: fn(&mut Record, &str) -> Result<(), String>,
}

/// Every column, in file order.
pub const COLUMNS: [Column; 32] = [
    Column {
        since: 1,
        name: "job_id",
        write: |r, out| out.push_str(&r.job_id),
        read: |r, cell| {
            if cell.is_empty() {
                return Err("is empty".into());
            }
            set(&mut r.job_id, cell);
            Ok(())
        },
    },
    Column {
        since: 1,
        name: "state",
        write: |r, out| out.push_str(r.state().as_str()),
        read: |r, cell| {
            let state = State::parse(cell)
                .ok_or_else(|| format!("{cell:?} is not a state ({})", State::ALLOWED))?;
            r.state = Some(state);
            Ok(())
        },
    },
    Column {
        since: 1,
        name: "task_id",
        write: |r, out| out.push_str(r.task_id.as_deref().unwrap_or_default()),
        read: |r, cell| {
            set_opt(&mut r.task_id, cell);
            Ok(())
        },
    },
    Column {
        since: 1,
        name: "attempts",
        write: |r, out| {
            let _ = write!(out, "{}", r.attempts);
        },
        read: |r, cell| {
            r.attempts = cell
                .parse::<u32>()
                .map_err(|_| format!("{cell:?} is not a whole number"))?;
            Ok(())
        },
    },
    text_column!(1, "model", model),
    text_column!(1, "generation_type", generation_type),
    text_column!(1, "aspect_ratio", aspect_ratio),
    text_column!(1, "prompt", prompt),
    text_column!(1, "fingerprint", fingerprint),
    list_column!(1, "video_urls", video_urls),
    list_column!(1, "upgrade_urls", upgrade_urls),
    list_column!(1, "video_paths", video_paths),
    Column {
        since: 1,
        name: "error_code",
        write: |r, out| {
            if let Some(c) = r.error_code {
                let _ = write!(out, "{c}");
            }
        },
        read: |r, cell| {
            r.error_code = match cell {
                "" => None,
                s => Some(
                    s.parse::<i64>()
                        .map_err(|_| format!("{s:?} is not an integer"))?,
                ),
            };
            Ok(())
        },
    },
    opt_column!(1, "error_message", error_message),
    opt_column!(1, "submitted_at", submitted_at),
    opt_column!(1, "finished_at", finished_at),
    text_column!(1, "updated_at", updated_at),
    // Added after the first release: a file without these reads them empty.
    Column {
        since: 2,
        name: "upgrade",
        write: |r, out| out.push_str(r.upgrade.map(Upgrade::as_str).unwrap_or_default()),
        read: |r, cell| {
            r.upgrade = match cell {
                "" => None,
                other => Some(Upgrade::parse(other).ok_or_else(|| {
                    format!(
                        "{other:?} is not an upgrade ({} or empty)",
                        Upgrade::ALLOWED
                    )
                })?),
            };
            Ok(())
        },
    },
    Column {
        since: 2,
        name: "keep_original",
        write: |r, out| out.push_str(if r.keep_original { "true" } else { "false" }),
        read: |r, cell| {
            r.keep_original = match cell {
                "" | "false" => false,
                "true" => true,
                other => return Err(format!("{other:?} is not true or false")),
            };
            Ok(())
        },
    },
    Column {
        since: 2,
        name: "credits",
        write: |r, out| {
            out.push_str(&crate::cost::credits_cell(r.credits));
        },
        read: |r, cell| {
            r.credits = match cell {
                "" => 0.0,
                s => s
                    .parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c >= 0.0)
                    .ok_or_else(|| format!("{s:?} is not a number of credits"))?,
            };
            Ok(())
        },
    },
    list_column!(2, "superseded_tasks", superseded_tasks),
    list_column!(2, "superseded_paths", superseded_paths),
    // What was asked beyond model, mode, ratio and prompt, for a data team to filter
    // on: the values the request had, with the service's defaults filled in.
    text_column!(2, "seeds", seeds),
    text_column!(2, "resolution", resolution),
    text_column!(2, "duration", duration),
    list_column!(2, "image_urls", image_urls),
    // Added with extend jobs.
    text_column!(3, "extends", extends),
    opt_column!(3, "parent_task_id", parent_task_id),
    // Added with measured spend: where the `credits` figure comes from.
    text_column!(4, "credits_source", credits_source),
    // Added with error kinds: a stable word for grouping and --retry-failed.
    Column {
        since: 5,
        name: "error_kind",
        write: |r, out| out.push_str(r.error_kind.map(ErrorKind::as_str).unwrap_or_default()),
        read: |r, cell| {
            r.error_kind = match cell {
                "" => None,
                word => Some(ErrorKind::parse(word).ok_or_else(|| {
                    let words: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                    format!(
                        "{word:?} is not an error kind ({} or empty)",
                        words.join(", ")
                    )
                })?),
            };
            Ok(())
        },
    },
    // Added with key pools: which account and key made the task (the key's id,
    // never the key), so that its later calls go with the same account.
    text_column!(6, "account", account),
    text_column!(6, "key_id", key_id),
];

/// The column names, in file order: the header row.
pub const HEADER: [&str; COLUMNS.len()] = {
    let mut names = [""; COLUMNS.len()];
    let mut i = 0;
    while i < COLUMNS.len() {
        names[i] = COLUMNS[i].name;
        i += 1;
    }
    names
};

/// The schema versions veo-batch has written, one per header it has released:
/// 1, the first release; 2, what was asked beyond the prompt (upgrades, credits,
/// superseded tasks, seeds, resolution, duration, images); 3, extend jobs; 4,
/// measured spend (where the credits figure comes from); 5, error kinds; 6, key
/// pools (the account and key id that made the task). A new
/// column takes the next version, and its header width follows.
pub const VERSIONS: usize = COLUMNS[COLUMNS.len() - 1].since;

/// The number of columns of the header of schema `version`.
pub const fn width_of(version: usize) -> usize {
    let mut width = 0;
    while width < COLUMNS.len() && COLUMNS[width].since <= version {
        width += 1;
    }
    width
}

/// The number of columns of a header that veo-batch wrote, if `names` is one.
pub fn known_width<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    let mut width = 0;
    for name in names {
        if HEADER.get(width) != Some(&name) {
            return None;
        }
        width += 1;
    }
    (1..=VERSIONS)
        .any(|v| width_of(v) == width)
        .then_some(width)
}

/// True when `line` (without its line end) is a header veo-batch wrote.
pub fn is_header_line(line: &str) -> bool {
    known_width(line.split(',')).is_some()
}

fn set(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

fn set_opt(slot: &mut Option<String>, value: &str) {
    match slot {
        _ if value.is_empty() => *slot = None,
        Some(s) => set(s, value),
        None => *slot = Some(value.to_owned()),
    }
}

fn set_list(slot: &mut Vec<String>, value: &str) {
    slot.clear();
    if !value.is_empty() {
        slot.extend(value.split(LIST_SEPARATOR).map(str::to_owned));
    }
}

fn push_list(out: &mut String, items: &[String]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(LIST_SEPARATOR);
        }
        out.push_str(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value of the field table's `Upgrade` is written in the results file and
    /// read back; a value it does not declare is refused with the ones it does.
    #[test]
    fn every_upgrade_value_is_recorded_and_read_back() {
        let column = COLUMNS.iter().find(|c| c.name == "upgrade").unwrap();
        for u in Upgrade::ALL {
            let mut cell = String::new();
            let record = Record {
                upgrade: Some(u),
                ..Record::default()
            };
            (column.write)(&record, &mut cell);
            assert_eq!(cell, u.as_str());
            let mut back = Record::default();
            (column.read)(&mut back, &cell).unwrap();
            assert_eq!(back.upgrade, Some(u), "{u} read back from the results file");
        }
        let mut back = Record::default();
        assert_eq!(
            (column.read)(&mut back, "8k"),
            Err(format!(
                "\"8k\" is not an upgrade ({} or empty)",
                Upgrade::ALLOWED
            ))
        );
    }

    /// Columns are only ever added at the end: versions never go down in file
    /// order, and each version adds at least one column.
    #[test]
    fn versions_only_grow_along_the_file() {
        assert!(COLUMNS.windows(2).all(|w| w[0].since <= w[1].since));
        assert_eq!(COLUMNS[0].since, 1);
        for v in 1..VERSIONS {
            assert!(width_of(v) < width_of(v + 1), "version {v}");
        }
        assert_eq!(width_of(VERSIONS), COLUMNS.len());
        assert_eq!(
            [
                width_of(1),
                width_of(2),
                width_of(3),
                width_of(4),
                width_of(5),
                width_of(6)
            ],
            [17, 26, 28, 29, 30, 32]
        );
    }

    /// One results file per released header, kept in tests/fixtures/results:
    /// every one must keep loading, its missing cells read empty.
    #[test]
    fn a_results_file_of_every_released_header_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results");
        for v in 1..=VERSIONS {
            let path = dir.join(format!("v{v}.csv"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no fixture for version {v}: {e}"));
            let header = text.lines().next().unwrap_or_default();
            assert_eq!(
                header,
                HEADER[..width_of(v)].join(","),
                "{}",
                path.display()
            );
            let loaded = crate::checkpoint::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .unwrap_or_else(|| panic!("{}: empty", path.display()));
            assert_eq!(loaded.records["a"].state(), State::Succeeded, "{v}");
            assert_eq!(loaded.records["b"].state(), State::Failed, "{v}");
        }
    }
}
