//! The library's one error type. Every variant names what the user gave us (a file, a
//! tensor, a line) so a CLI can print it on one line.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is in the message rather than the error chain, so a CLI printing the
    /// chain (`{:#}`) does not say it twice.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A checkpoint, config or data file that could not be parsed.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// Shapes of in-memory arguments disagree (a library caller's mistake or bad data).
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad user input that is not tied to a file: an empty prompt, a bad option value.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A line of a user data file (JSONL task, circuit list) that is malformed.
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("task: {0}")]
    Task(String),
    #[error("circuit: {0}")]
    Circuit(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error("built without CUDA: rebuild with `--features cuda` to use the GPU")]
    NoCuda,
    #[error("cuda: {0}")]
    Cuda(String),
    /// An output folder that cannot take a run: not a folder, not writable, or holding an
    /// earlier run (checked before any work starts).
    #[error("{path}: {msg}")]
    OutDir { path: PathBuf, msg: String },
    /// Ctrl-C; `kept` says what is left on disk (`nothing written to DIR`).
    #[error("interrupted: {kept}")]
    Interrupted { kept: String },
    /// A check or bench that ran to the end and failed (`selftest FAILED`).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        let msg = msg.into();
        // candle appends a backtrace to its messages under RUST_BACKTRACE; errors are one line.
        let msg = match msg.split_once('\n') {
            Some((first, _)) => first.trim_end().to_owned(),
            None => msg,
        };
        Error::Format {
            path: path.into(),
            msg,
        }
    }
    pub fn out_dir(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::OutDir {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}

/// Read a whole file, naming it in the error.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Write a whole file, naming it in the error; atomically (a temporary file renamed over
/// `path`, `report::out::write_atomic`), so a killed run never leaves it truncated.
pub fn write_file(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    crate::report::out::write_atomic(path, bytes)
}

/// Read a whole text file, naming it in the error.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Run `f`, a call into a dependency that panics on some malformed inputs instead of
/// returning an error (tokenizers' decoder deserialiser, its `Strip` decoder), and turn
/// such a panic into its message. The panic hook is silenced meanwhile, so the user sees
/// one error line; the swap is serialised, so concurrent callers never leave it silenced.
pub(crate) fn contain_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _swap = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}
