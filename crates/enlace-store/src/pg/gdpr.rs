//! GDPR on PostgreSQL: [`GdprTx`] for the contacts' `Tx`; an erasure is one transaction
//! (the contact's row locked first), the removal queue is claimed with `SKIP LOCKED`.

use enlace_core::contacts::{Contact, ContactKey};

use super::Pg;
use super::contacts::Tx;
use crate::gdpr::{
    AudienceMember, AudienceRemovalRow, ContactRecords, Erasure, GdprTx, NewMembership, RemovalOutcome, erase, gdpr_statements,
    record_membership, records, runs_about_contact,
};
use crate::{Millis, Result};

gdpr_statements!(Tx<'_>, true);

impl Pg {
    pub(crate) async fn erase(&self, key: ContactKey, by: &str, hash_key: [u8; 32], now: Millis) -> Result<Erasure> {
        let mut tx = self.pool.begin().await?;
        // An error drops the transaction, which rolls it back.
        let out = erase(&mut Tx(&mut tx), key, by, &hash_key, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn contact_records(&self, key: ContactKey) -> Result<Option<ContactRecords>> {
        let mut c = self.pool.acquire().await?;
        records(&mut Tx(&mut c), key).await
    }

    pub(crate) async fn runs_about_contact(&self, contact: &Contact, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let mut c = self.pool.acquire().await?;
        runs_about_contact(&mut Tx(&mut c), contact, after, limit).await
    }

    pub(crate) async fn erasures(
        &self,
        contact_id: Option<&str>,
        email_hash: Option<&str>,
        phone_hash: Option<&str>,
    ) -> Result<Vec<Erasure>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).erasures(contact_id, email_hash, phone_hash).await
    }

    pub(crate) async fn record_membership(&self, m: NewMembership) -> Result<AudienceMember> {
        let mut tx = self.pool.begin().await?;
        let out = record_membership(&mut Tx(&mut tx), m).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn audience_removals(&self, status: Option<&str>, limit: i64) -> Result<Vec<AudienceRemovalRow>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).removals(status, limit).await
    }

    pub(crate) async fn claim_audience_removals(
        &self,
        owner: &str,
        now: Millis,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<AudienceRemovalRow>> {
        let mut tx = self.pool.begin().await?;
        let out = Tx(&mut tx).claim_removals(owner, now, limit, lease_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn finish_audience_removal(&self, id: &str, owner: &str, outcome: RemovalOutcome, now: Millis) -> Result<bool> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).finish_removal(id, owner, &outcome, now).await
    }
}

impl Pg {
    /// `table.column` of every value holding `needle` (case-insensitive, as text), in every
    /// table of the schema: how tests prove an erasure left no trace.
    pub(crate) async fn scan_text(&self, needle: &str) -> Result<Vec<String>> {
        use sqlx::Row;
        let mut c = self.pool.acquire().await?;
        let cols = sqlx::query(
            "SELECT c.table_name::text AS t, c.column_name::text AS c FROM information_schema.columns c
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' ORDER BY 1, 2",
        )
        .fetch_all(&mut *c)
        .await?;
        let mut hits = vec![];
        for r in cols {
            let (t, col): (String, String) = (r.get("t"), r.get("c"));
            let sql = format!("SELECT COUNT(*) FROM \"{t}\" WHERE lower(\"{col}\"::text) LIKE $1 ESCAPE '\\'");
            // Names from the schema itself; the needle is bound.
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(crate::gdpr::like(needle)).fetch_one(&mut *c).await?;
            if n > 0 {
                hits.push(format!("{t}.{col}"));
            }
        }
        Ok(hits)
    }
}
