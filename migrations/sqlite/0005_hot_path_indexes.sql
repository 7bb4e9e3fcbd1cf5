-- Nothing looks a delivery up by its lease token any more: a claim returns its rows, and a
-- result is found by id and then checked against the token. One index fewer to write on
-- every claim and every result.
DROP INDEX IF EXISTS hookd_deliveries_lease_token;
