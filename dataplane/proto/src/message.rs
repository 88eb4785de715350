//! What every call-table message has in common: code, class, codec.
//!
//! [`Message`] is implemented by the `call_table!` macro for each request
//! and reply struct, so generic code (the client's `submit`, the benches)
//! can encode a concrete call without going through the [`Call`](crate::Call)
//! enum.

/// How a call is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallClass {
    /// Answered inside the shim from cached state; never on the wire.
    Local,
    /// Fire-and-forget: batched, credit-limited, no reply; failures surface
    /// at the next sync call (deferred errors).
    Async,
    /// Blocks the caller until its reply; flushes the batch ahead of it.
    Sync,
}

impl CallClass {
    /// The class name as written in the call table.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "Local",
            Self::Async => "Async",
            Self::Sync => "Sync",
        }
    }
}

/// A request or reply body type from the call table.
pub trait Message<'a>: Sized {
    /// Wire code of the call (replies share their call's code).
    const CODE: u16;
    /// Class of the call.
    const CLASS: CallClass;
    /// Struct name in the table.
    const NAME: &'static str;

    /// Appends the body encoding to `out` (after [`Message::check`]).
    fn encode_body(&self, out: &mut Vec<u8>);

    /// Checks every variable-length field against its bound, so that a
    /// local mistake is refused locally instead of closing the connection.
    ///
    /// # Errors
    /// [`FieldError`](crate::FieldError) of the first field over its bound
    /// (with the field name).
    fn check(&self) -> Result<(), (&'static str, crate::FieldError)>;

    /// Trailer bytes that must follow this message's frame on the stream:
    /// the sum of its fields' [`Field::trailer_len`](crate::field::Field::trailer_len)
    /// (in field order), 0 for messages without a trailing payload.
    fn trailer_len(&self) -> u64;

    /// Decodes a whole body, rejecting trailing bytes.
    ///
    /// # Errors
    /// [`DecodeError`](crate::DecodeError) naming the failing field.
    fn decode_body(body: &'a [u8]) -> Result<Self, crate::DecodeError>;

    /// Produces a random valid value (property tests, sim workloads).
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self;
}

/// Metadata of one call-table entry (for docs and tooling).
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    /// Wire code.
    pub code: u16,
    /// Request struct name.
    pub name: &'static str,
    /// Class.
    pub class: CallClass,
    /// Request fields as (name, type) source text.
    pub request: &'static [(&'static str, &'static str)],
    /// Reply fields as (name, type) source text.
    pub reply: &'static [(&'static str, &'static str)],
}

/// Renders [`CALL_TABLE`](crate::CALL_TABLE) as the markdown table embedded
/// in `docs/wire.md` (a test keeps the two identical).
#[must_use]
pub fn render_call_table_markdown() -> String {
    let mut s = String::from("| code | call | class | request fields | reply fields |\n");
    s.push_str("|---:|---|---|---|---|\n");
    let fields = |f: &[(&str, &str)]| {
        if f.is_empty() {
            "—".to_owned()
        } else {
            f.iter()
                .map(|(n, t)| format!("`{n}: {}`", t.replace(' ', "")))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for c in crate::CALL_TABLE {
        let reply = if c.class == CallClass::Async {
            "(none)".to_owned()
        } else {
            fields(c.reply)
        };
        s.push_str(&format!(
            "| `{:#06x}` | {} | {} | {} | {} |\n",
            c.code,
            c.name,
            c.class.as_str(),
            fields(c.request),
            reply
        ));
    }
    s
}
