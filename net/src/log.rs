//! Structured logs as etcd 3.5's zap logger writes them: one JSON object per
//! line on stderr, `{"level":"info","ts":"…","caller":"…","msg":"…",…}`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            // etcd's panic and fatal levels still log errors.
            "error" | "dpanic" | "panic" | "fatal" => Some(Level::Error),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(l: Level) {
    MIN_LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn enabled(l: Level) -> bool {
    l as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// A field value.
pub enum V<'a> {
    S(&'a str),
    I(i64),
    U(u64),
    B(bool),
    F(f64),
    L(&'a [String]),
    /// A member or cluster ID, written in hex as etcd does.
    X(u64),
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-11-29T14:30:00.123Z` for a time since the Unix epoch.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Formats one log line (without the newline).
pub fn line(level: Level, caller: &str, msg: &str, fields: &[(&str, V<'_>)]) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"level\":");
    push_str(&mut out, level.name());
    out.push_str(",\"ts\":");
    push_str(&mut out, &iso8601(SystemTime::now()));
    out.push_str(",\"caller\":");
    push_str(&mut out, caller);
    out.push_str(",\"msg\":");
    push_str(&mut out, msg);
    for (k, v) in fields {
        out.push(',');
        push_str(&mut out, k);
        out.push(':');
        match v {
            V::S(s) => push_str(&mut out, s),
            V::I(i) => {
                let _ = write!(out, "{i}");
            }
            V::U(u) => {
                let _ = write!(out, "{u}");
            }
            V::B(b) => {
                let _ = write!(out, "{b}");
            }
            V::F(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            V::F(_) => out.push_str("null"),
            V::X(x) => push_str(&mut out, &format!("{x:x}")),
            V::L(l) => {
                out.push('[');
                for (i, s) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_str(&mut out, s);
                }
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

pub fn log(level: Level, caller: &str, msg: &str, fields: &[(&str, V<'_>)]) {
    if !enabled(level) {
        return;
    }
    let mut l = line(level, caller, msg, fields);
    l.push('\n');
    // A closed stderr must not take the server down.
    let _ = std::io::stderr().lock().write_all(l.as_bytes());
}

pub fn info(caller: &str, msg: &str, fields: &[(&str, V<'_>)]) {
    log(Level::Info, caller, msg, fields);
}

pub fn warn(caller: &str, msg: &str, fields: &[(&str, V<'_>)]) {
    log(Level::Warn, caller, msg, fields);
}

pub fn error(caller: &str, msg: &str, fields: &[(&str, V<'_>)]) {
    log(Level::Error, caller, msg, fields);
}

pub fn debug(caller: &str, msg: &str, fields: &[(&str, V<'_>)]) {
    log(Level::Debug, caller, msg, fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_civil_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_are_json_objects_with_escaped_strings() {
        let l = line(
            Level::Warn,
            "etcdserver/server.go:1",
            "say \"hi\"\n",
            &[
                ("n", V::I(-3)),
                ("id", V::X(0x8e9e05c52164694d)),
                ("urls", V::L(&["a".into(), "b".into()])),
            ],
        );
        assert!(l.starts_with("{\"level\":\"warn\",\"ts\":\""), "{l}");
        assert!(
            l.ends_with(
                "\"caller\":\"etcdserver/server.go:1\",\"msg\":\"say \\\"hi\\\"\\n\",\"n\":-3,\"id\":\"8e9e05c52164694d\",\"urls\":[\"a\",\"b\"]}"
            ),
            "{l}"
        );
    }

    #[test]
    fn levels_parse_as_etcd_names_them() {
        assert_eq!(Level::parse("debug"), Some(Level::Debug));
        assert_eq!(Level::parse("fatal"), Some(Level::Error));
        assert_eq!(Level::parse("verbose"), None);
    }
}
