//! What the client commands print: the one way a server's text reaches the
//! terminal.
//!
//! - **Escaped.** Characters [`is_escaped`] names (controls: C0, DEL, C1;
//!   bidirectional controls, zero-width and other invisible formatting
//!   characters) are shown as escapes (`\u{1b}`, `\u{202e}`, `\r`); bytes
//!   that are not UTF-8 as `\xNN`. JSON output stays valid JSON: the same
//!   characters are written as `\uXXXX` escapes, so it parses to exactly
//!   what the server sent.
//! - **Cut.** A name is shown up to [`NAME_SHOWN`] bytes, the first line of
//!   a doc up to [`DOC_SHOWN`], an error message up to [`ERROR_SHOWN`]; the
//!   rest is replaced by `… (N more bytes)`.
//! - **Bounded as a whole.** A command writes at most [`OUTPUT_LIMIT`] to
//!   stdout: text past it is cut with a marker line, JSON that would not
//!   fit is not written at all (cut JSON would be invalid), and the command
//!   fails saying so.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, StdoutLock, Write};

use pipesvc::error::is_escaped;
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use serde_json::Value;

/// The most a client command writes to stdout: twice the largest answer
/// the commands accept (8 MiB, the client's default `max_frame_len`), so
/// that any answer fits even with part of it escaped.
pub const OUTPUT_LIMIT: usize = 16 << 20;
/// How [`OUTPUT_LIMIT`] is named in messages.
const OUTPUT_LIMIT_NAME: &str = "16 MiB";
/// Bytes of a name shown (a service's name, version and encodings, a
/// method's name, a server's HELLO name) before it is cut.
pub const NAME_SHOWN: usize = 80;
/// Bytes of the first line of a method's doc shown before it is cut.
pub const DOC_SHOWN: usize = 200;
/// Bytes of an error message (on stderr) shown before it is cut.
pub const ERROR_SHOWN: usize = 4096;

/// Which layout characters of server text are kept as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A field of a line (a name, a doc's first line): line feeds and tabs
    /// are escaped too.
    Field,
    /// A body of text (a response, an error message): line feeds and tabs
    /// are kept; every other escaped character is escaped.
    Text,
}

/// Server text as shown: escaped, and cut once more than `max` bytes would
/// be shown.
#[derive(Debug)]
pub struct Shown {
    /// What to print; ends with `… (N more bytes)` if cut.
    pub text: String,
    /// Bytes of the server's text left out (0: all shown).
    pub left_out: usize,
}

/// `bytes` from a server as text to show: UTF-8 with [`is_escaped`]
/// characters escaped (but for line feeds and tabs in [`Layout::Text`]),
/// other bytes as `\xNN`; cut after `max` bytes of shown text with
/// `… (N more bytes)`, N counting the server's bytes not shown.
pub fn shown(bytes: &[u8], layout: Layout, max: usize) -> Shown {
    let mut text = String::new();
    let mut consumed = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let before = text.len();
            push_char(&mut text, c, layout);
            if text.len() > max {
                return cut(text, before, bytes.len() - consumed);
            }
            consumed += c.len_utf8();
        }
        for byte in chunk.invalid() {
            let before = text.len();
            let _ = write!(text, "\\x{byte:02x}");
            if text.len() > max {
                return cut(text, before, bytes.len() - consumed);
            }
            consumed += 1;
        }
    }
    Shown { text, left_out: 0 }
}

/// A field of a line: [`shown`] in [`Layout::Field`], as text.
pub fn field(text: &str, max: usize) -> String {
    shown(text.as_bytes(), Layout::Field, max).text
}

fn push_char(text: &mut String, c: char, layout: Layout) {
    match c {
        '\n' | '\t' if layout == Layout::Text => text.push(c),
        c if is_escaped(c) => {
            let _ = write!(text, "{}", c.escape_default());
        }
        c => text.push(c),
    }
}

fn cut(mut text: String, keep: usize, left_out: usize) -> Shown {
    text.truncate(keep);
    let _ = write!(text, "… ({left_out} more bytes)");
    Shown { text, left_out }
}

/// Writes an error message as one line on stderr, escaped and cut at
/// [`ERROR_SHOWN`] (server text in it is escaped already: escaping again
/// changes nothing).
pub fn error(message: &str) {
    let shown = shown(message.as_bytes(), Layout::Text, ERROR_SHOWN);
    eprintln!("{}", shown.text);
}

/// A command's stdout, of which it writes at most [`OUTPUT_LIMIT`] bytes.
/// On a terminal each line shows as it is written; into a pipe or a file
/// lines are buffered (call [`Out::flush`] to pass on what is there).
pub struct Out {
    stdout: io::BufWriter<StdoutLock<'static>>,
    written: usize,
    terminal: bool,
}

impl Out {
    /// Stdout (call [`Out::finish`] at the end).
    pub fn stdout() -> Out {
        let stdout = io::stdout();
        Out {
            terminal: stdout.is_terminal(),
            stdout: io::BufWriter::new(stdout.lock()),
            written: 0,
        }
    }

    /// Bytes that may still be written.
    pub fn room(&self) -> usize {
        OUTPUT_LIMIT - self.written
    }

    /// Writes `line` (made of [`shown`] server text) and a line feed. If
    /// it does not fit, writes a marker line instead and fails: the output
    /// is cut.
    pub fn line(&mut self, line: &str) -> pipesvc::Result<()> {
        if line.len() + 1 > self.room() {
            return Err(self.cut_off()?);
        }
        self.stdout.write_all(line.as_bytes())?;
        self.stdout.write_all(b"\n")?;
        self.written += line.len() + 1;
        match self.terminal {
            true => self.flush(),
            false => Ok(()),
        }
    }

    /// Passes on the lines written so far (as each is written, for a
    /// command whose lines come one by one).
    pub fn flush(&mut self) -> pipesvc::Result<()> {
        Ok(self.stdout.flush()?)
    }

    /// Writes the marker of output cut at the limit; the error to fail
    /// with.
    fn cut_off(&mut self) -> pipesvc::Result<pipesvc::Error> {
        writeln!(self.stdout, "… (output cut at {OUTPUT_LIMIT_NAME})")?;
        self.stdout.flush()?;
        Ok(too_large(format!(
            "output cut at {OUTPUT_LIMIT_NAME}: the service sent more than a command prints"
        )))
    }

    /// A service's answer as text: [`shown`] in [`Layout::Text`], cut at
    /// what is left of [`OUTPUT_LIMIT`] (then the command fails).
    pub fn text(&mut self, bytes: &[u8]) -> pipesvc::Result<()> {
        // Room for the `… (N more bytes)` of a cut.
        let max = self.room().saturating_sub(64);
        let shown = shown(bytes, Layout::Text, max);
        self.line(&shown.text)?;
        match shown.left_out {
            0 => Ok(()),
            _ => Err(self.cut_off()?),
        }
    }

    /// The bytes as they are, without a line feed (`call --raw`): bounded
    /// by the client's frame limit, not escaped.
    pub fn raw(&mut self, bytes: &[u8]) -> pipesvc::Result<()> {
        Ok(self.stdout.write_all(bytes)?)
    }

    /// `value` as JSON, on one line; on a terminal indented, unless that
    /// is more than four times as long (deep nesting). [`is_escaped`]
    /// characters are written as `\uXXXX`. Nothing is written, and the
    /// command fails, if it does not fit in what is left of
    /// [`OUTPUT_LIMIT`].
    pub fn json(&mut self, value: &Value) -> pipesvc::Result<()> {
        let room = self.room().saturating_sub(1);
        let Some(compact) = to_json(value, CompactFormatter, room) else {
            return Err(too_large(format!(
                "the answer is more than {OUTPUT_LIMIT_NAME} as JSON (with its escapes), \
                 more than a command prints; nothing printed"
            )));
        };
        let pretty = match self.terminal {
            true => to_json(value, PrettyFormatter::new(), room.min(4 * compact.len())),
            false => None,
        };
        self.line(&pretty.unwrap_or(compact))
    }

    /// One item of a stream (`call` of a streaming method, `watch`) as
    /// compact JSON on its own line, passed on at once. A stream's output
    /// has no bound as a whole (it may run until interrupted); each line
    /// is one item, which its frame bounds.
    pub fn item(&mut self, value: &Value) -> pipesvc::Result<()> {
        let line = to_json(value, CompactFormatter, OUTPUT_LIMIT).ok_or_else(|| {
            too_large(format!("an item is more than {OUTPUT_LIMIT_NAME} as JSON"))
        })?;
        self.stdout.write_all(line.as_bytes())?;
        self.stdout.write_all(b"\n")?;
        self.flush()
    }

    /// Writes out what is buffered.
    pub fn finish(mut self) -> pipesvc::Result<()> {
        self.flush()
    }
}

/// Returns once stdout is a pipe whose reader closed it (`| head -3`
/// done): a stream command then stops at once, not at its next item (which
/// may be long in coming). Never returns where that cannot be watched
/// (stdout a file or a terminal; not Unix): the next write tells instead.
pub async fn stdout_closed() {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use tokio::io::unix::AsyncFd;
        use tokio::io::Interest;
        // A pipe's write end reports an error once its read end is closed.
        let watched = io::stdout().as_fd().try_clone_to_owned().and_then(|fd| {
            // SAFETY: an OwnedFd is an open descriptor it alone closes, on
            // drop, and its raw fd never changes: it stays valid for as
            // long as the AsyncFd that owns it.
            unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }.map_err(Into::into)
        });
        if let Ok(fd) = watched {
            if fd.ready(Interest::ERROR).await.is_ok() {
                return;
            }
        }
    }
    std::future::pending::<()>().await
}

/// Whether `err` is stdout closed by its reader (`| head -3`): a stream
/// command then stops (cancelling its stream) and exits 0 without a
/// word, as the reader had what it wanted.
pub fn is_closed_stdout(err: &pipesvc::Error) -> bool {
    matches!(err, pipesvc::Error::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
}

fn too_large(message: String) -> pipesvc::Error {
    pipesvc::Error::Io(io::Error::new(io::ErrorKind::FileTooLarge, message))
}

/// `value` in JSON with `formatter`'s layout and [`Escaping`]; `None` if it
/// is longer than `max` bytes.
fn to_json(value: &Value, formatter: impl Formatter, max: usize) -> Option<String> {
    let mut out = Capped {
        bytes: Vec::new(),
        max,
    };
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Escaping(formatter));
    value.serialize(&mut serializer).ok()?;
    // serde_json writes UTF-8.
    String::from_utf8(out.bytes).ok()
}

/// A buffer that refuses to grow past `max` bytes.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A JSON formatter that also escapes what [`is_escaped`] names (serde_json
/// escapes only C0 controls, `"` and `\`), as `\uXXXX` (a surrogate pair
/// above U+FFFF); its layout is `F`'s.
struct Escaping<F>(F);

impl<F: Formatter> Formatter for Escaping<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !is_escaped(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            for unit in c.encode_utf16(&mut [0; 2]) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_cut_with_a_marker() {
        let shown = shown("a\u{1b}b\u{202e}\n\tz".as_bytes(), Layout::Field, 100);
        assert_eq!(shown.text, "a\\u{1b}b\\u{202e}\\n\\tz");
        assert_eq!(shown.left_out, 0);
        let text = super::shown("a\u{85}\n\tz".as_bytes(), Layout::Text, 100);
        assert_eq!(text.text, "a\\u{85}\n\tz");
        let bytes = super::shown(b"ok\xff\xc3", Layout::Text, 100);
        assert_eq!(bytes.text, "ok\\xff\\xc3");
        // Cut between characters, never inside an escape; N counts the
        // server's bytes left out.
        let cut = super::shown("abc\u{1b}def".as_bytes(), Layout::Field, 8);
        assert_eq!(cut.text, "abc… (4 more bytes)");
        assert_eq!(cut.left_out, 4);
        let cut = super::shown("zwölf".as_bytes(), Layout::Field, 3);
        assert_eq!(cut.text, "zw… (4 more bytes)");
    }

    #[test]
    fn json_stays_valid_and_escapes_what_text_escapes() {
        let value = serde_json::json!({ "k\u{202e}": ["\u{7f}\u{85}\u{1b}\u{e0041}é\"\\"] });
        let json = to_json(&value, CompactFormatter, 1000).unwrap();
        assert_eq!(
            json,
            r#"{"k\u202e":["\u007f\u0085\u001b\udb40\udc41é\"\\"]}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), value);
        let pretty = to_json(&value, PrettyFormatter::new(), 1000).unwrap();
        assert!(pretty.contains("\n  \"k\\u202e\": ["), "{pretty}");
        assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), value);
        assert!(to_json(&value, CompactFormatter, json.len() - 1).is_none());
    }
}
