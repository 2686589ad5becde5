//! Single rows of a results file read back by their place in it: the final
//! rewrite of a run copies each job's last row from where the run appended it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::rc::Rc;

use super::Record;

/// Reads single rows of the results file back by their place in it.
pub struct RowReader<'a> {
    source: &'a File,
    /// The bytes of the row read last.
    pub bytes: Vec<u8>,
    /// One csv reader for every row: building one costs more than parsing a row.
    rdr: csv::Reader<Feed>,
    feed: Rc<RefCell<VecDeque<u8>>>,
    cells: csv::StringRecord,
}

/// The bytes handed to [`RowReader`]'s csv reader, one row at a time.
struct Feed(Rc<RefCell<VecDeque<u8>>>);

impl io::Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl RowReader<'_> {
    pub fn new(source: &File) -> RowReader<'_> {
        let feed = Rc::new(RefCell::new(VecDeque::new()));
        RowReader {
            source,
            bytes: Vec::with_capacity(1024),
            rdr: csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(Feed(feed.clone())),
            feed,
            cells: csv::StringRecord::new(),
        }
    }

    /// Reads the `len` bytes at `offset` into `bytes`.
    pub fn read(&mut self, offset: u64, len: u32) -> io::Result<()> {
        self.bytes.resize(len as usize, 0);
        read_exact_at(self.source, &mut self.bytes, offset)
    }

    /// The record of the row in `bytes`, read from `offset`.
    pub fn parse(&mut self, offset: u64) -> io::Result<Record> {
        let row_at = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the row at byte {offset} does not read back: {why}"),
            )
        };
        // The row ends with its line end, so the reader stops right after it and
        // keeps nothing of it for the next row.
        self.feed.borrow_mut().extend(&self.bytes);
        let read = self.rdr.read_record(&mut self.cells);
        let leftover = !self.feed.borrow().is_empty();
        self.feed.borrow_mut().clear();
        if !read.map_err(|e| row_at(e.to_string()))? {
            return Err(row_at("it is empty".into()));
        }
        if leftover {
            return Err(row_at("it holds more than one row".into()));
        }
        Record::from_cells(&self.cells).map_err(|(_, why)| row_at(why))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}
