//! Append-only JSON-lines files, shared by the coordinator's log and a node's
//! receipt file: durable appends, splitting contents into complete lines and a
//! torn fragment, reading only the last line, and the explicit repair that
//! drops a torn fragment.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Whether each append reaches stable storage before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every append (and head write): an append that returned
    /// survives a crash or power loss. What production must use.
    EveryAppend,
    /// Leave flushing to the operating system. A crash may lose the last
    /// appends (never reorder or alter earlier ones); for tests and to measure
    /// what the fsyncs cost.
    OsBuffered,
}

/// The lines of a file: complete (newline-terminated) lines with their 1-based
/// numbers, and a torn last fragment if the file does not end with a newline.
pub(crate) struct SplitLines<'a> {
    /// Complete lines without their newline.
    pub complete: Vec<&'a [u8]>,
    /// Bytes after the last newline, if any: a write cut short by a crash.
    pub torn: Option<&'a [u8]>,
}

/// Splits file contents into complete lines and a torn fragment.
pub(crate) fn split_lines(contents: &[u8]) -> SplitLines<'_> {
    let mut complete: Vec<&[u8]> = contents.split(|byte| *byte == b'\n').collect();
    // `split` yields one final piece after the last newline: empty when the
    // file ends cleanly, otherwise the torn fragment.
    let last = complete.pop().unwrap_or_default();
    SplitLines {
        complete,
        torn: (!last.is_empty()).then_some(last),
    }
}

/// Opens (creating if needed) a file for appending only: with `O_APPEND` every
/// write lands at the current end, whatever anyone else did to the offset.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Appends text (one line, or several joined by newlines; a final newline is
/// added) in a single write, then syncs if asked.
pub(crate) fn append_line(file: &mut File, line: &str, sync: SyncPolicy) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    file.write_all(&bytes)?;
    if sync == SyncPolicy::EveryAppend {
        file.sync_data()?;
    }
    Ok(())
}

/// The end of a file: its last complete line and any torn fragment after it.
pub(crate) struct FileTail {
    /// The last newline-terminated line, without its newline.
    pub last_line: Option<Vec<u8>>,
    /// Length of the fragment after the last newline (0 when the file ends cleanly).
    pub torn_bytes: u64,
    /// Offset where the torn fragment starts (the file's length when none).
    pub clean_length: u64,
}

/// Reads backwards from the end of the file in blocks, so opening a large log
/// costs one line's worth of reading rather than the whole file.
pub(crate) fn read_tail(file: &mut File) -> io::Result<FileTail> {
    const BLOCK: u64 = 8 * 1024;
    let length = file.seek(SeekFrom::End(0))?;
    // Bytes read so far, ending at `length`; grows towards the start of the file.
    let mut suffix: Vec<u8> = Vec::new();
    let mut start = length;
    let last_two_newlines = |suffix: &[u8]| -> Option<(usize, Option<usize>)> {
        let last = suffix.iter().rposition(|byte| *byte == b'\n')?;
        let previous = suffix[..last].iter().rposition(|byte| *byte == b'\n');
        Some((last, previous))
    };
    loop {
        if let Some((last, previous)) = last_two_newlines(&suffix)
            && (previous.is_some() || start == 0)
        {
            let line_start = previous.map_or(0, |index| index + 1);
            let torn_bytes = (suffix.len() - last - 1) as u64;
            return Ok(FileTail {
                last_line: Some(suffix[line_start..last].to_vec()),
                torn_bytes,
                clean_length: length - torn_bytes,
            });
        }
        if start == 0 {
            // No newline at all: the whole file, if anything, is a torn fragment.
            return Ok(FileTail {
                last_line: None,
                torn_bytes: length,
                clean_length: 0,
            });
        }
        let block_start = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - block_start) as usize];
        file.seek(SeekFrom::Start(block_start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&suffix);
        suffix = block;
        start = block_start;
    }
}

/// Cuts a torn fragment off the end of the file and returns how many bytes
/// were dropped (0 if the file already ended with a newline).
pub(crate) fn truncate_torn_tail(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let tail = read_tail(&mut file)?;
    if tail.torn_bytes > 0 {
        file.set_len(tail.clean_length)?;
        file.sync_all()?;
    }
    Ok(tail.torn_bytes)
}

/// Replaces `path` atomically: write a temporary sibling, sync it, rename it
/// over the target, then sync the directory so the rename itself is durable.
pub(crate) fn replace_atomically(path: &Path, contents: &[u8], sync: SyncPolicy) -> io::Result<()> {
    let mut temporary_name = path.as_os_str().to_owned();
    temporary_name.push(".tmp");
    let temporary = Path::new(&temporary_name);
    let mut file = File::create(temporary)?;
    file.write_all(contents)?;
    if sync == SyncPolicy::EveryAppend {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(temporary, path)?;
    if sync == SyncPolicy::EveryAppend
        && let Some(directory) = path.parent()
    {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        File::open(directory)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(contents: &[u8]) -> FileTail {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("file");
        std::fs::write(&path, contents).unwrap();
        read_tail(&mut File::open(&path).unwrap()).unwrap()
    }

    #[test]
    fn tail_finds_the_last_complete_line_and_the_torn_fragment() {
        let check = |contents: &[u8], last: Option<&[u8]>, torn: u64| {
            let tail = tail_of(contents);
            assert_eq!(tail.last_line.as_deref(), last, "{contents:?}");
            assert_eq!(tail.torn_bytes, torn, "{contents:?}");
            assert_eq!(tail.clean_length, contents.len() as u64 - torn);
        };
        check(b"", None, 0);
        check(b"abc", None, 3);
        check(b"a\n", Some(b"a"), 0);
        check(b"a\nbc\n", Some(b"bc"), 0);
        check(b"a\nbc\nde", Some(b"bc"), 2);
        check(b"\n", Some(b""), 0);
    }

    #[test]
    fn tail_spans_several_blocks() {
        let long_line = vec![b'x'; 20_000];
        let mut contents = b"first\n".to_vec();
        contents.extend_from_slice(&long_line);
        contents.extend_from_slice(b"\ntorn");
        let tail = tail_of(&contents);
        assert_eq!(tail.last_line, Some(long_line));
        assert_eq!(tail.torn_bytes, 4);
    }

    #[test]
    fn split_separates_the_torn_fragment() {
        let split = split_lines(b"a\nb\nc");
        assert_eq!(split.complete, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(split.torn, Some(&b"c"[..]));
        assert_eq!(split_lines(b"a\n").torn, None);
    }
}
