//! Model prices, per 1M tokens; model `*` is the default.

use chrono::Utc;

use super::{PriceRow, Store, StoreError, Versioned, audit::Change};

impl Store {
    /// Sets (inserts or replaces) the price of a model.
    pub async fn set_price(&self, price: PriceRow) -> Result<Versioned<PriceRow>, StoreError> {
        self.mutate(async |tx| {
            let row: PriceRow = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "INSERT INTO prices (model, input_micros, cached_input_micros, output_micros, \
                 updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET \
                 input_micros = excluded.input_micros, \
                 cached_input_micros = excluded.cached_input_micros, \
                 output_micros = excluded.output_micros, updated_at = excluded.updated_at \
                 RETURNING ",
                price_columns!()
            ))
            .bind(&price.model)
            .bind(price.input_micros)
            .bind(price.cached_input_micros)
            .bind(price.output_micros)
            .bind(Utc::now())
            .fetch_one(c)
            .await?);
            let change = Change::new("price.set", format!("price {}", row.model), &row);
            Ok((row, change))
        })
        .await
    }

    /// All prices.
    pub async fn list_prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            price_columns!(),
            " FROM prices ORDER BY model"
        ))
        .fetch_all(c)
        .await?))
    }
}
