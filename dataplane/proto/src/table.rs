//! The `call_table!` macro: one declaration per call, everything else derived.
//!
//! Each entry names the call's wire code, its class, its request fields and
//! (for sync and local calls) its reply fields. From that single table the
//! macro generates the per-call request and reply structs, their
//! [`Message`](crate::Message) impls (code, class, encode, decode), the
//! [`Call`](crate::Call) and [`Reply`](crate::Reply) enums with total
//! `decode(kind, body)` functions, random generators for tests, and the
//! [`CALL_TABLE`](crate::CALL_TABLE) metadata that `docs/wire.md` is checked
//! against. The shim's encoder and the worker's decoder both come from here,
//! so they cannot drift.
//!
//! Entry syntax (doc comments allowed on entries and fields):
//! ```text
//! CODE Name[<'a>]: Class { field: Type, ... } [-> ReplyName[<'a>] { field: Type, ... }];
//! ```
//! Structs that borrow from the body declare `<'a>`; the lifetime must be
//! spelled `'a`. A const assertion per entry enforces that `Sync` calls have
//! a reply and `Async` calls do not.

/// Generates the call structs, enums and metadata; see the module docs.
macro_rules! call_table {
    ($(
        $(#[doc = $doc:literal])*
        $code:literal $name:ident $(<$lt:lifetime>)? : $class:ident {
            $( $(#[doc = $fdoc:literal])* $field:ident : $fty:ty ),* $(,)?
        }
        $( -> $rname:ident $(<$rlt:lifetime>)? {
            $( $(#[doc = $rfdoc:literal])* $rfield:ident : $rfty:ty ),* $(,)?
        } )?
        ;
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = ""]
            #[doc = concat!("Code `", stringify!($code), "`, class `", stringify!($class), "`.")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $name $(<$lt>)? {
                $( $(#[doc = $fdoc])* #[doc = concat!("Wire field `", stringify!($field), "`.")] pub $field: $fty, )*
            }

            impl<'a> $crate::Message<'a> for $name $(<$lt>)? {
                const CODE: u16 = $code;
                const CLASS: $crate::CallClass = $crate::CallClass::$class;
                const NAME: &'static str = stringify!($name);

                #[inline]
                fn encode_body(&self, _out: &mut Vec<u8>) {
                    $( $crate::field::Field::encode(&self.$field, _out); )*
                }

                #[inline]
                fn check(&self) -> Result<(), (&'static str, $crate::FieldError)> {
                    $( $crate::field::Field::check(&self.$field).map_err(|e| (stringify!($field), e))?; )*
                    Ok(())
                }

                #[inline]
                fn trailer_len(&self) -> u64 {
                    // Each term is bounded by MAX_TRAILER_BYTES and a message
                    // has a handful of fields: the sum cannot overflow.
                    0 $( + $crate::field::Field::trailer_len(&self.$field) )*
                }

                #[inline]
                fn decode_body(body: &'a [u8]) -> Result<Self, $crate::DecodeError> {
                    let mut _r = $crate::field::Reader::new(body);
                    let v = Self {
                        $( $field: $crate::field::Field::decode(&mut _r).map_err(|source| {
                            $crate::DecodeError::Field {
                                kind: $code,
                                field: stringify!($field),
                                source,
                            }
                        })?, )*
                    };
                    if _r.remaining() != 0 {
                        return Err($crate::DecodeError::TrailingBytes {
                            kind: $code,
                            extra: _r.remaining(),
                        });
                    }
                    Ok(v)
                }

                #[cfg(feature = "sim")]
                fn generate(_g: &mut $crate::sim::Gen<'a>) -> Self {
                    Self { $( $field: $crate::field::Field::generate(_g), )* }
                }
            }

            // Sync calls must declare a reply; async calls must not.
            const _: () = {
                let has_reply = 0 $( + { let _ = stringify!($rname); 1 } )? == 1;
                match $crate::CallClass::$class {
                    $crate::CallClass::Sync => assert!(has_reply, "sync call without reply"),
                    $crate::CallClass::Async => assert!(!has_reply, "async call with reply"),
                    $crate::CallClass::Local => {}
                }
            };

            $(
                #[doc = concat!("Reply to [`", stringify!($name), "`].")]
                #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                pub struct $rname $(<$rlt>)? {
                    $( $(#[doc = $rfdoc])* #[doc = concat!("Wire field `", stringify!($rfield), "`.")] pub $rfield: $rfty, )*
                }

                impl<'a> $crate::Message<'a> for $rname $(<$rlt>)? {
                    const CODE: u16 = $code;
                    const CLASS: $crate::CallClass = $crate::CallClass::$class;
                    const NAME: &'static str = stringify!($rname);

                    #[inline]
                    fn encode_body(&self, _out: &mut Vec<u8>) {
                        $( $crate::field::Field::encode(&self.$rfield, _out); )*
                    }

                    #[inline]
                    fn check(&self) -> Result<(), (&'static str, $crate::FieldError)> {
                        $( $crate::field::Field::check(&self.$rfield).map_err(|e| (stringify!($rfield), e))?; )*
                        Ok(())
                    }

                    #[inline]
                    fn trailer_len(&self) -> u64 {
                        0 $( + $crate::field::Field::trailer_len(&self.$rfield) )*
                    }

                    #[inline]
                    fn decode_body(body: &'a [u8]) -> Result<Self, $crate::DecodeError> {
                        let mut _r = $crate::field::Reader::new(body);
                        let v = Self {
                            $( $rfield: $crate::field::Field::decode(&mut _r).map_err(|source| {
                                $crate::DecodeError::Field {
                                    kind: $code,
                                    field: stringify!($rfield),
                                    source,
                                }
                            })?, )*
                        };
                        if _r.remaining() != 0 {
                            return Err($crate::DecodeError::TrailingBytes {
                                kind: $code,
                                extra: _r.remaining(),
                            });
                        }
                        Ok(v)
                    }

                    #[cfg(feature = "sim")]
                    fn generate(_g: &mut $crate::sim::Gen<'a>) -> Self {
                        Self { $( $rfield: $crate::field::Field::generate(_g), )* }
                    }
                }
            )?
        )*

        /// Any request in the call table, borrowing variable-length fields
        /// from the frame body it was decoded from.
        // Deliberately exhaustive: the worker's dispatch `match` must
        // fail to compile when a call is added to the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Call<'a> {
            $(
                #[doc = concat!("See [`", stringify!($name), "`].")]
                $name($name $(<$lt>)?),
            )*
        }

        impl<'a> Call<'a> {
            /// The call's wire code.
            #[must_use]
            pub const fn code(&self) -> u16 {
                match self { $( Self::$name(_) => $code, )* }
            }

            /// The call's class.
            #[must_use]
            pub const fn class(&self) -> $crate::CallClass {
                match self { $( Self::$name(_) => $crate::CallClass::$class, )* }
            }

            /// The call's name in the table.
            #[must_use]
            pub const fn name(&self) -> &'static str {
                match self { $( Self::$name(_) => stringify!($name), )* }
            }

            /// Checks variable-length fields against their bounds; see
            /// [`Message::check`](crate::Message::check).
            ///
            /// # Errors
            /// The first field over its bound.
            #[inline]
            pub fn check(&self) -> Result<(), (&'static str, $crate::FieldError)> {
                match self {
                    $( Self::$name(c) => $crate::Message::check(c), )*
                }
            }

            /// Trailer bytes that follow this call's frame on the stream;
            /// see [`Message::trailer_len`](crate::Message::trailer_len).
            #[inline]
            #[must_use]
            pub fn trailer_len(&self) -> u64 {
                match self {
                    $( Self::$name(c) => $crate::Message::trailer_len(c), )*
                }
            }

            /// Appends the call's body encoding to `out`.
            #[inline]
            pub fn encode_body(&self, out: &mut Vec<u8>) {
                match self {
                    $( Self::$name(c) => $crate::Message::encode_body(c, out), )*
                }
            }

            /// Decodes the body of a frame of kind `kind`. Total: every
            /// input yields a call or a typed error.
            ///
            /// # Errors
            /// [`DecodeError::UnknownKind`](crate::DecodeError::UnknownKind)
            /// for codes not in the table, other variants for bad bodies.
            #[inline]
            pub fn decode(kind: u16, body: &'a [u8]) -> Result<Self, $crate::DecodeError> {
                match kind {
                    $( $code => <$name as $crate::Message>::decode_body(body).map(Self::$name), )*
                    _ => Err($crate::DecodeError::UnknownKind { kind }),
                }
            }

            /// Generates a random valid instance of the `index`-th table
            /// entry (modulo the table length).
            #[cfg(feature = "sim")]
            pub fn generate(index: usize, g: &mut $crate::sim::Gen<'a>) -> Self {
                const ALL: &[u16] = &[$($code),*];
                match ALL[index % ALL.len()] {
                    $( $code => Self::$name(<$name as $crate::Message>::generate(g)), )*
                    // ALL only holds table codes.
                    _ => unreachable!("code not in table"),
                }
            }
        }

        /// Any reply in the call table (one per sync or local call).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reply<'a> {
            $( $(
                #[doc = concat!("See [`", stringify!($rname), "`].")]
                $rname($rname $(<$rlt>)?),
            )? )*
        }

        impl<'a> Reply<'a> {
            /// Code of the call this reply answers.
            #[must_use]
            pub const fn code(&self) -> u16 {
                match self { $( $( Self::$rname(_) => $code, )? )* }
            }

            /// Checks variable-length fields against their bounds.
            ///
            /// # Errors
            /// The first field over its bound.
            #[inline]
            pub fn check(&self) -> Result<(), (&'static str, $crate::FieldError)> {
                match self {
                    $( $( Self::$rname(r) => $crate::Message::check(r), )? )*
                }
            }

            /// Trailer bytes this reply announces (replies may not carry
            /// trailers; a non-zero value is refused on both sides).
            #[inline]
            #[must_use]
            pub fn trailer_len(&self) -> u64 {
                match self {
                    $( $( Self::$rname(r) => $crate::Message::trailer_len(r), )? )*
                }
            }

            /// Appends the reply's body encoding to `out`.
            #[inline]
            pub fn encode_body(&self, out: &mut Vec<u8>) {
                match self {
                    $( $( Self::$rname(r) => $crate::Message::encode_body(r, out), )? )*
                }
            }

            /// Decodes the reply body for a call of code `code`.
            ///
            /// # Errors
            /// [`DecodeError::UnknownKind`](crate::DecodeError::UnknownKind)
            /// if `code` has no reply, other variants for bad bodies.
            #[inline]
            pub fn decode(code: u16, body: &'a [u8]) -> Result<Self, $crate::DecodeError> {
                match code {
                    $( $( $code => <$rname as $crate::Message>::decode_body(body).map(Self::$rname), )? )*
                    _ => Err($crate::DecodeError::UnknownKind { kind: code }),
                }
            }

            /// Generates a random valid reply for call code `code`, if that
            /// call has a reply.
            #[cfg(feature = "sim")]
            pub fn generate(code: u16, g: &mut $crate::sim::Gen<'a>) -> Option<Self> {
                match code {
                    $( $( $code => Some(Self::$rname(<$rname as $crate::Message>::generate(g))), )? )*
                    _ => None,
                }
            }
        }

        /// Metadata of every table entry, in table order.
        pub const CALL_TABLE: &[$crate::CallInfo] = &[
            $(
                $crate::CallInfo {
                    code: $code,
                    name: stringify!($name),
                    class: $crate::CallClass::$class,
                    request: &[ $( (stringify!($field), stringify!($fty)), )* ],
                    reply: &[ $( $( (stringify!($rfield), stringify!($rfty)), )* )? ],
                },
            )*
        ];
    };
}
