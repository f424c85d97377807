package budget

import (
	"slices"
	"strings"
)

// Pricing is a vendor's price list as a budget takes it. Prices change: each
// preset says where it was read and when, and a budget keeps the figures it
// was given, not the preset's name, so a preset updated later changes no
// budget.
type Pricing struct {
	Name        string
	Description string
	// Source and AsOf say where the prices were read, and on what day.
	Source string
	AsOf   string

	PricePerMillionMicros          int64
	RetrievedPricePerMillionMicros int64
	// RetrievalsPerTrace is an estimate the preset starts from: adjust it
	// to how often your queries retrieve or scan a trace.
	RetrievalsPerTrace        float64
	SpanPricePerMillionMicros int64
	FreeTraces                int64
}

// Presets are the vendors' prices the CLI knows by name (`--pricing`).
var Presets = []Pricing{
	{
		Name: "aws-xray",
		Description: "AWS X-Ray: $5.00 per million traces recorded, $0.50 per million retrieved or scanned (one retrieval per " +
			"trace assumed); the first 100,000 recorded a month free (the free million retrievals is not modelled)",
		Source:                         "https://aws.amazon.com/xray/pricing/ (US East)",
		AsOf:                           "2026-12-02",
		PricePerMillionMicros:          5 * MicrosPerUnit,
		RetrievedPricePerMillionMicros: MicrosPerUnit / 2,
		RetrievalsPerTrace:             1,
		FreeTraces:                     100_000,
	},
	{
		Name: "aws-xray-insights",
		Description: "AWS X-Ray with X-Ray Insights on: as aws-xray, plus $1.00 per million traces processed by Insights " +
			"(every recorded trace): $6.00 per million recorded",
		Source:                         "https://aws.amazon.com/xray/pricing/ (US East)",
		AsOf:                           "2026-12-02",
		PricePerMillionMicros:          6 * MicrosPerUnit,
		RetrievedPricePerMillionMicros: MicrosPerUnit / 2,
		RetrievalsPerTrace:             1,
		FreeTraces:                     100_000,
	},
}

// Preset returns the preset called name (case-insensitive).
func Preset(name string) (Pricing, bool) {
	i := slices.IndexFunc(Presets, func(p Pricing) bool { return strings.EqualFold(p.Name, name) })
	if i < 0 {
		return Pricing{}, false
	}
	return Presets[i], true
}

// PresetNames lists the presets' names.
func PresetNames() []string {
	names := make([]string, len(Presets))
	for i, p := range Presets {
		names[i] = p.Name
	}
	return names
}

// Apply sets b's prices and free allowance to the preset's; the currency
// of every preset is USD.
func (p *Pricing) Apply(b *Budget) {
	b.Currency = "USD"
	b.PricePerMillionMicros = p.PricePerMillionMicros
	b.RetrievedPricePerMillionMicros = p.RetrievedPricePerMillionMicros
	b.RetrievalsPerTrace = p.RetrievalsPerTrace
	b.SpanPricePerMillionMicros = p.SpanPricePerMillionMicros
	b.FreeTraces = p.FreeTraces
}
