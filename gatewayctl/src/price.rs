//! `gatewayctl price …`: model prices per 1M tokens, in currency units.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::v1;

use crate::{
    CliError, Client,
    money::{format_amount, parse_amount},
    output::{Table, print_json},
};

/// Price commands.
#[derive(Debug, Subcommand)]
pub enum PriceCmd {
    /// Set a model's price per 1M tokens (`--model '*'` is the default).
    Set(PriceSet),
    /// List prices.
    List,
}

/// Runs one price command. Both print a table: `set` shows the one row it wrote.
pub(crate) async fn run(
    client: &mut Client,
    cmd: PriceCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let prices = match cmd {
        PriceCmd::Set(args) => {
            let set = args.send(client).await?;
            if json {
                return print_json(out, &set);
            }
            vec![set]
        }
        PriceCmd::List => {
            let list = client
                .list_prices(v1::ListPricesRequest {})
                .await?
                .into_inner()
                .prices;
            if json {
                return print_json(out, &list);
            }
            list
        }
    };
    let mut t = Table::new(&["MODEL", "INPUT /1M", "CACHED INPUT /1M", "OUTPUT /1M"]);
    for p in prices {
        t.row(vec![
            p.model,
            format_amount(p.input_micros),
            format_amount(p.cached_input_micros),
            format_amount(p.output_micros),
        ]);
    }
    Ok(t.write(out)?)
}

/// `price set`.
#[derive(Debug, Args)]
pub struct PriceSet {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub input: String,
    #[arg(long)]
    pub cached_input: String,
    #[arg(long)]
    pub output: String,
}

impl PriceSet {
    async fn send(self, client: &mut Client) -> Result<v1::Price, CliError> {
        let price = v1::Price {
            model: self.model,
            input_micros: parse_amount(&self.input).map_err(CliError::Usage)?,
            cached_input_micros: parse_amount(&self.cached_input).map_err(CliError::Usage)?,
            output_micros: parse_amount(&self.output).map_err(CliError::Usage)?,
        };
        let request = v1::SetPriceRequest { price: Some(price) };
        Ok(client.set_price(request).await?.into_inner())
    }
}
