//! Logging set-up: `logging.level` (Nebula/logrus names) and `logging.format` (text | json), both
//! changeable at run time on reload through a [`LogHandle`].
//!
//! Owns the global tracing subscriber. Must not decide what gets logged; modules use `tracing`.
//! Output goes to stderr, like Nebula's logrus default.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{reload, Layer, Registry};

/// `logging.level`. tracing has nothing above ERROR, so panic and fatal keep only errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Panic,
    Fatal,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// `logging.disable_timestamp` / `logging.timestamp_format`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimeStyle {
    /// RFC 3339 in UTC (meshd's default; Nebula's empty layout is RFC 3339 too).
    #[default]
    Default,
    /// No timestamp at all.
    Off,
    /// A Go layout, rendered in local time as logrus does.
    Layout(super::logtime::GoLayout),
}

/// A config value that is not a level or format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {value:?} is not one of {allowed}")]
pub struct BadLogSetting {
    key: &'static str,
    value: String,
    allowed: &'static str,
}

impl FromStr for Level {
    type Err = BadLogSetting;

    /// Accepts what logrus' `ParseLevel` accepts, case-insensitively.
    fn from_str(s: &str) -> Result<Level, BadLogSetting> {
        match s.to_ascii_lowercase().as_str() {
            "panic" => Ok(Level::Panic),
            "fatal" => Ok(Level::Fatal),
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warning),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            "trace" => Ok(Level::Trace),
            _ => Err(BadLogSetting {
                key: "logging.level",
                value: s.to_string(),
                allowed: "panic, fatal, error, warning, info, debug, trace",
            }),
        }
    }
}

impl FromStr for Format {
    type Err = BadLogSetting;

    fn from_str(s: &str) -> Result<Format, BadLogSetting> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(BadLogSetting {
                key: "logging.format",
                value: s.to_string(),
                allowed: "text, json",
            }),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Level::Panic => "panic",
            Level::Fatal => "fatal",
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        f.write_str(name)
    }
}

impl Level {
    fn filter(self) -> LevelFilter {
        match self {
            Level::Panic | Level::Fatal | Level::Error => LevelFilter::ERROR,
            Level::Warning => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
            Level::Trace => LevelFilter::TRACE,
        }
    }
}

// The level is a global filter and the formatter a separate layer above it, each behind its own
// reload handle: per-layer filters cannot be swapped by reload (tracing-subscriber panics).
type LevelLayer = reload::Layer<LevelFilter, Registry>;
type Filtered = Layered<LevelLayer, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;
type Factory = dyn Fn(Format, &TimeStyle) -> BoxedLayer + Send + Sync;

/// Changes level and format of the installed subscriber (reload).
#[derive(Clone)]
pub struct LogHandle {
    level: reload::Handle<LevelFilter, Registry>,
    format: reload::Handle<BoxedLayer, Filtered>,
    current: Arc<Mutex<(Level, Format)>>,
    time: Arc<Mutex<TimeStyle>>,
    factory: Arc<Factory>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("current", &self.current())
            .finish()
    }
}

/// Installs the global subscriber writing to stderr. Call once, at start-up.
pub fn init(level: Level, format: Format, time: TimeStyle) -> anyhow::Result<LogHandle> {
    let (subscriber, handle) = build(level, format, std::io::stderr);
    handle.set_time(time)?;
    tracing::subscriber::set_global_default(subscriber).context("installing the logger")?;
    Ok(handle)
}

/// Builds a subscriber and its handle without installing it (tests use a scoped default).
pub fn build<W>(
    level: Level,
    format: Format,
    writer: W,
) -> (impl tracing::Subscriber + Send + Sync, LogHandle)
where
    W: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    let factory: Arc<Factory> =
        Arc::new(move |format, time| make_layer(format, time, writer.clone()));
    let (level_layer, level_handle) = reload::Layer::new(level.filter());
    let (format_layer, format_handle) = reload::Layer::new(factory(format, &TimeStyle::Default));
    let subscriber = Registry::default().with(level_layer).with(format_layer);
    let current = Arc::new(Mutex::new((level, format)));
    let handle = LogHandle {
        level: level_handle,
        format: format_handle,
        current,
        time: Arc::new(Mutex::new(TimeStyle::Default)),
        factory,
    };
    (subscriber, handle)
}

impl LogHandle {
    /// The level and format in force.
    pub fn current(&self) -> (Level, Format) {
        // A poisoned lock only means a panic elsewhere mid-update; the pair is still usable.
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `logging.level` and `logging.format` (both reloadable in Nebula).
    pub fn apply(&self, level: Level, format: Format) -> anyhow::Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.1 != format {
            let time = self.time.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.format
                .reload((self.factory)(format, &time))
                .context("changing logging.format")?;
            cur.1 = format;
        }
        if cur.0 != level {
            self.level
                .reload(level.filter())
                .context("changing logging.level")?;
            cur.0 = level;
        }
        Ok(())
    }

    /// Applies `logging.disable_timestamp` / `timestamp_format` (reloadable, as in Nebula).
    pub fn set_time(&self, time: TimeStyle) -> anyhow::Result<()> {
        let mut cur = self.time.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != time {
            self.format
                .reload((self.factory)(self.current().1, &time))
                .context("changing logging.timestamp_format")?;
            *cur = time;
        }
        Ok(())
    }

    /// Changes only the level.
    pub fn set_level(&self, level: Level) -> anyhow::Result<()> {
        self.apply(level, self.current().1)
    }

    /// Changes only the format.
    pub fn set_format(&self, format: Format) -> anyhow::Result<()> {
        self.apply(self.current().0, format)
    }
}

fn make_layer<W>(format: Format, time: &TimeStyle, writer: W) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match (format, time) {
        (Format::Text, TimeStyle::Default) => base.boxed(),
        (Format::Text, TimeStyle::Off) => base.without_time().boxed(),
        (Format::Text, TimeStyle::Layout(l)) => base.with_timer(l.clone()).boxed(),
        (Format::Json, TimeStyle::Default) => base.json().flatten_event(true).boxed(),
        (Format::Json, TimeStyle::Off) => base.json().flatten_event(true).without_time().boxed(),
        (Format::Json, TimeStyle::Layout(l)) => base
            .json()
            .flatten_event(true)
            .with_timer(l.clone())
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A writer that appends into a shared buffer.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    #[test]
    fn nebula_level_names_parse() {
        assert_eq!("warning".parse::<Level>(), Ok(Level::Warning));
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warning));
        assert_eq!("panic".parse::<Level>(), Ok(Level::Panic));
        assert_eq!(
            "fatal".parse::<Level>().map(Level::filter),
            Ok(LevelFilter::ERROR)
        );
        let err = "loud".parse::<Level>().unwrap_err().to_string();
        assert!(
            err.contains("logging.level") && err.contains("loud"),
            "{err}"
        );
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
        assert!("xml"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("logging.format"));
    }

    #[test]
    fn level_and_format_change_at_run_time() {
        let out = Capture::default();
        let (subscriber, handle) = build(Level::Info, Format::Text, out.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("first");
            tracing::debug!("hidden");
            let text = out.take();
            assert!(text.contains("first") && !text.contains("hidden"), "{text}");

            handle.set_level(Level::Error).unwrap();
            tracing::warn!("suppressed");
            tracing::error!("shown");
            let text = out.take();
            assert!(
                !text.contains("suppressed") && text.contains("shown"),
                "{text}"
            );

            handle.apply(Level::Debug, Format::Json).unwrap();
            tracing::debug!(peer = "10.0.0.2", "as json");
            let line = out.take();
            assert!(line.trim_start().starts_with('{'), "{line}");
            assert!(
                line.contains("\"message\":\"as json\"") && line.contains("\"peer\":\"10.0.0.2\""),
                "{line}"
            );
            assert_eq!(handle.current(), (Level::Debug, Format::Json));
        });
    }

    /// `logging.disable_timestamp` and `logging.timestamp_format` in both formats.
    #[test]
    fn timestamp_keys_shape_every_line() {
        let layout = super::super::logtime::GoLayout::parse("2006/01/02 15h04");
        let date = |s: &str| {
            let b = s.as_bytes();
            b.len() >= 16
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'/'
                && b[7] == b'/'
                && b[13] == b'h'
        };
        for format in [Format::Text, Format::Json] {
            let out = Capture::default();
            let (subscriber, handle) = build(Level::Info, format, out.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!("default");
                let line = out.take();
                assert!(line.contains("20") && !date(&line), "{line}");

                handle.set_time(TimeStyle::Off).unwrap();
                tracing::info!("bare");
                let line = out.take();
                match format {
                    Format::Text => assert!(line.trim_start().starts_with("INFO"), "{line}"),
                    Format::Json => assert!(!line.contains("timestamp"), "{line}"),
                }

                handle.set_time(TimeStyle::Layout(layout.clone())).unwrap();
                tracing::info!("laid out");
                let line = out.take();
                match format {
                    Format::Text => assert!(date(&line), "{line}"),
                    Format::Json => {
                        let at = line.find("\"timestamp\":\"").expect("timestamp field") + 13;
                        assert!(date(&line[at..]), "{line}");
                    }
                }
            });
        }
    }
}
