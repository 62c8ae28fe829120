//! Rows as the store reads and writes them, mapped once for both backends.

mod config;
mod keys;
mod usage;

pub use self::{config::*, keys::*, usage::*};

use sqlx::{
    Database, Decode, Encode, Postgres, Sqlite, Type, encode::IsNull, error::BoxDynError,
    types::Json,
};

/// A list of strings as a column: `TEXT[]` on Postgres, JSON text on SQLite (which has no
/// arrays), so one query binds and reads it on both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct TextList(pub(in crate::store) Vec<String>);

impl From<TextList> for Vec<String> {
    fn from(list: TextList) -> Self {
        list.0
    }
}

impl Type<Postgres> for TextList {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <Vec<String> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for TextList {
    fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <Vec<String> as Decode<'r, Postgres>>::decode(value).map(Self)
    }
}

impl Type<Sqlite> for TextList {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <Json<Vec<String>> as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <Json<Vec<String>> as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <Json<&Vec<String>> as Encode<'_, Sqlite>>::encode_by_ref(&Json(&self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for TextList {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <Json<Vec<String>> as Decode<'r, Sqlite>>::decode(value).map(|list| Self(list.0))
    }
}
