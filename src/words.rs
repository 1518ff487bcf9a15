//! [`words!`]: the words an enum of plain variants is kept as in the store and shown as in
//! output, in one place for every module that keeps such an enum (store, conditions, events).

/// The words an enum of plain variants is kept as in the store and shown as in output: for
/// `words!(Kind { A => "a", B => "b" })`, `Kind::ALL` (in order), `as_str`, `parse` (of what
/// `as_str` wrote), `Display`, and comparison with a `&str` (`kind == "a"`).
macro_rules! words {
    ($name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The word used in the store, the API and output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// Parses what `as_str` wrote.
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        /// Compares with the word `as_str` gives.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
