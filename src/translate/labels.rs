//! The SenML labels of RFC 8428 (Table 1 of §4.3, Table 4 of §6): the JSON
//! name and the CBOR integer of each field this gateway resolves, and how
//! any other label is treated.
//!
//! §4.4: a label that is not understood is ignored, unless its name ends
//! with `_`, which marks an extension that must be understood: such a pack
//! is refused. §6: the CBOR integer labels are a closed table and
//! extensions use text labels, so in SenML CBOR an integer outside the
//! table is ignored and every text label is an extension (a CBOR record
//! that spells the name field as the text `"n"` has no name).

/// A field of RFC 8428 §4.1 (base fields) and §4.2 (regular fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    BaseName,
    BaseTime,
    BaseUnit,
    BaseValue,
    BaseSum,
    BaseVersion,
    Name,
    Unit,
    Value,
    StringValue,
    BoolValue,
    DataValue,
    Sum,
    Time,
    UpdateTime,
}

/// What a label found in a record means to this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Known(Label),
    /// Not a label of RFC 8428: the field is ignored.
    Ignored,
    /// An extension ending in `_` that must be understood: refuse the pack.
    MustUnderstand,
}

impl Label {
    pub(super) const ALL: [Label; 15] = [
        Label::BaseName,
        Label::BaseTime,
        Label::BaseUnit,
        Label::BaseValue,
        Label::BaseSum,
        Label::BaseVersion,
        Label::Name,
        Label::Unit,
        Label::Value,
        Label::StringValue,
        Label::BoolValue,
        Label::DataValue,
        Label::Sum,
        Label::Time,
        Label::UpdateTime,
    ];

    /// The JSON label (also used in the resolved output).
    pub(super) fn json(self) -> &'static str {
        match self {
            Label::BaseName => "bn",
            Label::BaseTime => "bt",
            Label::BaseUnit => "bu",
            Label::BaseValue => "bv",
            Label::BaseSum => "bs",
            Label::BaseVersion => "bver",
            Label::Name => "n",
            Label::Unit => "u",
            Label::Value => "v",
            Label::StringValue => "vs",
            Label::BoolValue => "vb",
            Label::DataValue => "vd",
            Label::Sum => "s",
            Label::Time => "t",
            Label::UpdateTime => "ut",
        }
    }

    /// The CBOR label (RFC 8428 Table 4).
    pub(super) fn cbor(self) -> i8 {
        match self {
            Label::BaseVersion => -1,
            Label::BaseName => -2,
            Label::BaseTime => -3,
            Label::BaseUnit => -4,
            Label::BaseValue => -5,
            Label::BaseSum => -6,
            Label::Name => 0,
            Label::Unit => 1,
            Label::Value => 2,
            Label::StringValue => 3,
            Label::BoolValue => 4,
            Label::Sum => 5,
            Label::Time => 6,
            Label::UpdateTime => 7,
            Label::DataValue => 8,
        }
    }

    /// Position in [`Label::ALL`], to index per-record tables.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// A label of a SenML JSON record.
    pub(super) fn from_json(name: &str) -> Key {
        match Label::ALL.into_iter().find(|l| l.json() == name) {
            Some(label) => Key::Known(label),
            None => extension(name),
        }
    }

    /// An integer label of a SenML CBOR record.
    pub(super) fn from_cbor(number: i128) -> Key {
        match Label::ALL
            .into_iter()
            .find(|l| i128::from(l.cbor()) == number)
        {
            Some(label) => Key::Known(label),
            None => Key::Ignored,
        }
    }
}

/// A label that is not one of RFC 8428's (in CBOR: any text label).
pub(super) fn extension(name: &str) -> Key {
    match name.ends_with('_') {
        true => Key::MustUnderstand,
        false => Key::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_match_rfc_8428() {
        let table: Vec<(&str, i8)> = Label::ALL.iter().map(|l| (l.json(), l.cbor())).collect();
        assert_eq!(
            table,
            [
                ("bn", -2),
                ("bt", -3),
                ("bu", -4),
                ("bv", -5),
                ("bs", -6),
                ("bver", -1),
                ("n", 0),
                ("u", 1),
                ("v", 2),
                ("vs", 3),
                ("vb", 4),
                ("vd", 8),
                ("s", 5),
                ("t", 6),
                ("ut", 7),
            ]
        );
        for (i, label) in Label::ALL.iter().enumerate() {
            assert_eq!(label.index(), i);
            assert_eq!(Label::from_json(label.json()), Key::Known(*label));
            assert_eq!(
                Label::from_cbor(i128::from(label.cbor())),
                Key::Known(*label)
            );
        }
    }

    #[test]
    fn unknown_labels_are_ignored_unless_they_end_in_an_underscore() {
        assert_eq!(Label::from_json("foo"), Key::Ignored);
        assert_eq!(Label::from_json("bfoo"), Key::Ignored);
        assert_eq!(Label::from_json("foo_"), Key::MustUnderstand);
        assert_eq!(Label::from_cbor(9), Key::Ignored);
        assert_eq!(Label::from_cbor(-7), Key::Ignored);
        // In CBOR, text labels are extensions: "n" is not the name field.
        assert_eq!(extension("n"), Key::Ignored);
        assert_eq!(extension("n_"), Key::MustUnderstand);
    }
}
