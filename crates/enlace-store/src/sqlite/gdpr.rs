//! GDPR on SQLite: [`GdprTx`] for the contacts' `Tx`; erasures and membership writes are
//! jobs of the writer (one transaction each), reads use the read pool.

use enlace_core::contacts::{Contact, ContactKey};

use super::Sqlite;
use super::contacts::Tx;
use crate::gdpr::{
    AudienceMember, AudienceRemovalRow, ContactRecords, Erasure, GdprTx, NewMembership, RemovalOutcome, erase, gdpr_statements,
    record_membership, records, runs_about_contact,
};
use crate::{Millis, Result};

gdpr_statements!(Tx<'_>, false);

impl Sqlite {
    pub(crate) async fn erase(&self, key: ContactKey, by: &str, hash_key: [u8; 32], now: Millis) -> Result<Erasure> {
        let by = by.to_string();
        self.write(move |c| Box::pin(async move { erase(&mut Tx(c), key, &by, &hash_key, now).await })).await
    }

    pub(crate) async fn contact_records(&self, key: ContactKey) -> Result<Option<ContactRecords>> {
        let mut c = self.read.acquire().await?;
        records(&mut Tx(&mut c), key).await
    }

    pub(crate) async fn runs_about_contact(&self, contact: &Contact, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let mut c = self.read.acquire().await?;
        runs_about_contact(&mut Tx(&mut c), contact, after, limit).await
    }

    pub(crate) async fn erasures(
        &self,
        contact_id: Option<&str>,
        email_hash: Option<&str>,
        phone_hash: Option<&str>,
    ) -> Result<Vec<Erasure>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).erasures(contact_id, email_hash, phone_hash).await
    }

    pub(crate) async fn record_membership(&self, m: NewMembership) -> Result<AudienceMember> {
        self.write(move |c| Box::pin(async move { record_membership(&mut Tx(c), m).await })).await
    }

    pub(crate) async fn audience_removals(&self, status: Option<&str>, limit: i64) -> Result<Vec<AudienceRemovalRow>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).removals(status, limit).await
    }

    pub(crate) async fn claim_audience_removals(
        &self,
        owner: &str,
        now: Millis,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<AudienceRemovalRow>> {
        let owner = owner.to_string();
        self.write(move |c| Box::pin(async move { Tx(c).claim_removals(&owner, now, limit, lease_ms).await })).await
    }

    pub(crate) async fn finish_audience_removal(&self, id: &str, owner: &str, outcome: RemovalOutcome, now: Millis) -> Result<bool> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |c| Box::pin(async move { Tx(c).finish_removal(&id, &owner, &outcome, now).await })).await
    }
}

impl Sqlite {
    /// `table.column` of every text (or blob) value holding `needle` (case-insensitive), in
    /// every table: how tests prove an erasure left no trace.
    pub(crate) async fn scan_text(&self, needle: &str) -> Result<Vec<String>> {
        use sqlx::Row;
        let mut c = self.read.acquire().await?;
        let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .fetch_all(&mut *c)
            .await?;
        let mut hits = vec![];
        for t in tables {
            let cols = sqlx::query("SELECT name FROM pragma_table_info(?)").bind(&t).fetch_all(&mut *c).await?;
            for col in cols {
                let col: String = col.get("name");
                let sql = format!("SELECT COUNT(*) FROM \"{t}\" WHERE lower(CAST(\"{col}\" AS TEXT)) LIKE ? ESCAPE '\\'");
                // Names from the schema itself; the needle is bound.
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(crate::gdpr::like(needle)).fetch_one(&mut *c).await?;
                if n > 0 {
                    hits.push(format!("{t}.{col}"));
                }
            }
        }
        Ok(hits)
    }
}
