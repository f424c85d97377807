package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
)

// budgetCollector exports every budget's last decision at scrape time, from
// the replica's catalog: each replica shows the same figures, whichever one
// computed them.
type budgetCollector struct {
	catalog *catalog.Catalog
}

var (
	budgetSpendRatio = prometheus.NewDesc("controlplane_budget_spend_ratio",
		"Share of the monthly cap spent so far.", []string{"budget"}, nil)
	budgetForecastRatio = prometheus.NewDesc("controlplane_budget_forecast_ratio",
		"Month-end forecast as a share of the cap, at the factors in force.", []string{"budget"}, nil)
	budgetForecastUnenforcedRatio = prometheus.NewDesc("controlplane_budget_forecast_unenforced_ratio",
		"Month-end forecast as a share of the cap if nothing were enforced.", []string{"budget"}, nil)
	budgetFactor = prometheus.NewDesc("controlplane_budget_enforcement_factor",
		"Factor applied to the fixed rates of the rules in scope (1 = not enforcing).", []string{"budget"}, nil)
	budgetReservoirFactor = prometheus.NewDesc("controlplane_budget_reservoir_factor",
		"Factor applied to the reservoirs of the rules in scope.", []string{"budget"}, nil)
	budgetExhausted = prometheus.NewDesc("controlplane_budget_exhausted",
		"1 when the cap is reached and only the floor is traced.", []string{"budget"}, nil)
)

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{budgetSpendRatio, budgetForecastRatio, budgetForecastUnenforcedRatio, budgetFactor, budgetReservoirFactor, budgetExhausted} {
		ch <- d
	}
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	bs := c.catalog.CurrentBudgets()
	for i := range bs.Budgets {
		b := &bs.Budgets[i]
		st, ok := bs.States[b.Name]
		if !ok {
			continue
		}
		capTraces := b.CapTraces()
		if capTraces <= 0 {
			continue
		}
		d := st.Decision
		exhausted := 0.0
		if d.Exhausted {
			exhausted = 1
		}
		for _, m := range []struct {
			desc *prometheus.Desc
			v    float64
		}{
			{budgetSpendRatio, d.Spent / capTraces},
			{budgetForecastRatio, d.Forecast / capTraces},
			{budgetForecastUnenforcedRatio, d.ForecastUnenforced / capTraces},
			{budgetFactor, d.FixedRateFactor},
			{budgetReservoirFactor, d.ReservoirFactor},
			{budgetExhausted, exhausted},
		} {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, m.v, b.Name)
		}
	}
}
