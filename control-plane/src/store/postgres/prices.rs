//! Model prices.

use super::{PgStore, PriceRow, StoreError, Versioned, bump_version};

impl PgStore {
    /// Sets (inserts or replaces) the price of a model.
    pub async fn set_price(&self, price: PriceRow) -> Result<Versioned<PriceRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: PriceRow = sqlx::query_as(
            "INSERT INTO prices (model, input_micros, cached_input_micros, output_micros) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (model) DO UPDATE SET \
             input_micros = EXCLUDED.input_micros, cached_input_micros = EXCLUDED.cached_input_micros, \
             output_micros = EXCLUDED.output_micros, updated_at = now() \
             RETURNING model, input_micros, cached_input_micros, output_micros",
        )
        .bind(&price.model)
        .bind(price.input_micros)
        .bind(price.cached_input_micros)
        .bind(price.output_micros)
        .fetch_one(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// All prices.
    pub async fn list_prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT model, input_micros, cached_input_micros, output_micros FROM prices ORDER BY model",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
