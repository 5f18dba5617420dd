//! A file that rotates by size: `app.log` is written until the next record would take
//! it past the limit, then it becomes `app.log.1` (the old `.1` becomes `.2`, and so
//! on), and files beyond the count are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::MakeWriter;

/// The counters of a `file` transport ([`LogService::file_stats`](super::LogService::file_stats)).
///
/// Records are handed to a writer thread, which writes them to the file; a stop waits
/// for it to write every record handed over (at most half the plugin's hook timeout),
/// and counts what it has not written by then in `lost`.
#[derive(Debug)]
pub struct FileStats {
    /// The file written to.
    pub path: PathBuf,
    /// Records handed to the writer thread.
    pub accepted: AtomicU64,
    /// Records written to the file.
    pub written: AtomicU64,
    /// Records the file refused (an I/O error: a full disk, say).
    pub failed: AtomicU64,
    /// Records still unwritten when a stop's deadline passed (or when the plugin was
    /// dropped without a stop). The writer thread goes on writing them while the
    /// process lives; a process that exits then loses them.
    pub lost: AtomicU64,
}

impl FileStats {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            accepted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// Records handed over and not yet written or failed.
    pub fn pending(&self) -> u64 {
        // `accepted` is counted before a record is handed over (and taken back if the
        // hand-over fails), and read after the others here, so this never reads low.
        let settled = self.written.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire);
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(settled)
    }
}

/// Waits until the writer threads of `files` have written (or failed) every record
/// handed to them, or `deadline` passes; what is still unwritten then is counted in
/// `lost` and logged. Whether every file was drained.
pub(super) async fn drain<'a>(
    files: impl Iterator<Item = &'a FileStats> + Clone,
    deadline: tokio::time::Instant,
) -> bool {
    // The threads write on their own; this only watches (a few ms between looks).
    while files.clone().any(|stats| stats.pending() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    count_unwritten(files) == 0
}

/// Counts what the writer threads of `files` have not written yet in `lost`, and logs
/// it; returns the total.
pub(super) fn count_unwritten<'a>(files: impl Iterator<Item = &'a FileStats>) -> u64 {
    let mut total = 0;
    for stats in files {
        let pending = stats.pending();
        if pending > 0 {
            total += pending;
            stats.lost.fetch_add(pending, Ordering::AcqRel);
            tracing::warn!(
                file = %stats.path.display(),
                lost = pending,
                "log file transport stopped with {pending} record(s) not written yet: \
                 lost if the process exits now"
            );
        }
    }
    total
}

/// The writer thread's side: a [`RotatingFile`] that counts the records it writes.
/// (`tracing-appender`'s worker hands each record to `write_all`.)
pub(super) struct CountedFile {
    file: RotatingFile,
    stats: Arc<FileStats>,
}

impl CountedFile {
    pub(super) fn new(file: RotatingFile) -> (Self, Arc<FileStats>) {
        let stats = Arc::new(FileStats::new(file.path().to_owned()));
        let counted = Self {
            file,
            stats: stats.clone(),
        };
        (counted, stats)
    }
}

impl Write for CountedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let result = self.file.write_all(buf);
        match &result {
            Ok(()) => {
                self.stats.written.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                if self.stats.failed.fetch_add(1, Ordering::AcqRel) == 0 {
                    eprintln!(
                        "logging-plugin: cannot write to `{}`: {e}",
                        self.stats.path.display()
                    );
                }
            }
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The formatters' side: `tracing-appender`'s non-blocking writer, counting the records
/// handed over.
pub(super) struct CountedWriter {
    inner: NonBlocking,
    stats: Arc<FileStats>,
}

impl CountedWriter {
    pub(super) fn new(inner: NonBlocking, stats: Arc<FileStats>) -> Self {
        Self { inner, stats }
    }
}

impl<'a> MakeWriter<'a> for CountedWriter {
    type Writer = Handing<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Handing {
            inner: self.inner.clone(),
            stats: &self.stats,
        }
    }
}

/// One record's writer ([`CountedWriter`]).
pub(super) struct Handing<'a> {
    inner: NonBlocking,
    stats: &'a FileStats,
}

impl Write for Handing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Counted first, so that `pending` never reads low while the writer thread
        // writes it. Not lossy: `write` waits for room, and fails only once the writer
        // thread is gone.
        self.stats.accepted.fetch_add(1, Ordering::AcqRel);
        let handed = self.inner.write(buf);
        if handed.is_err() {
            self.stats.accepted.fetch_sub(1, Ordering::AcqRel);
        }
        handed
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A size-rotated log file. Each `write` is one record (the `tracing` formatter writes
/// a whole line at once), so a record is never split between two files.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
    rotation_failed: bool,
}

impl RotatingFile {
    /// Opens (creating it and its directory if absent) `path` for appending. At most
    /// `max_files` files exist at once, the current one included; a file holds at most
    /// `max_bytes` unless a single record is larger.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file,
            size,
            rotation_failed: false,
        })
    }

    /// The file currently written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(self.numbered(keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                // Keep the record: append to the current file, and say why once.
                if !self.rotation_failed {
                    eprintln!(
                        "log rotation of `{}` failed: {e}; appending",
                        self.path.display()
                    );
                    self.rotation_failed = true;
                }
                if let Ok(file) = open_append(&self.path) {
                    self.file = file;
                }
            } else {
                self.rotation_failed = false;
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ixp-rotate-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn keeps_at_most_max_files_and_never_splits_a_record() {
        let dir = temp_dir("keep");
        let path = dir.join("logs").join("app.log");
        let mut file = RotatingFile::open(&path, 100, 3).expect("open");
        for i in 0..50 {
            file.write_all(format!("record {i:04} ........................\n").as_bytes())
                .expect("write");
        }
        file.flush().expect("flush");
        let mut names: Vec<_> = fs::read_dir(dir.join("logs"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names, ["app.log", "app.log.1", "app.log.2"]);
        for name in &names {
            let text = fs::read_to_string(dir.join("logs").join(name)).expect("read");
            assert!(text.len() <= 100, "{name}: {} bytes", text.len());
            assert!(text
                .lines()
                .all(|l| l.starts_with("record ") && l.ends_with('.')));
        }
        let newest = fs::read_to_string(&path).expect("read");
        assert!(newest.ends_with("record 0049 ........................\n"));
        let oldest = fs::read_to_string(dir.join("logs/app.log.2")).expect("read");
        assert!(oldest.starts_with("record 0044"), "{oldest}");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn one_file_is_truncated_in_place() {
        let dir = temp_dir("one");
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 10, 1).expect("open");
        file.write_all(b"12345678\n").expect("write");
        file.write_all(b"abcdefgh\n").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "abcdefgh\n");
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 1);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = temp_dir("append");
        let path = dir.join("app.log");
        fs::write(&path, "old record\n").expect("seed");
        let mut file = RotatingFile::open(&path, 15, 2).expect("open");
        file.write_all(b"new record\n").expect("write");
        assert_eq!(
            fs::read_to_string(dir.join("app.log.1")).expect("read"),
            "old record\n"
        );
        assert_eq!(fs::read_to_string(&path).expect("read"), "new record\n");
        fs::remove_dir_all(dir).ok();
    }
}
