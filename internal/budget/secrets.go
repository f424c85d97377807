package budget

import (
	"fmt"
	"slices"

	"github.com/tracesampling/controlplane/internal/secrets"
)

// secretContext binds a sealed webhook secret to its budget, so that a
// sealed value copied into another budget does not open.
func secretContext(budgetName string) string { return "webhook-secret:" + budgetName }

// SealSecrets returns b with every channel's secret sealed by box, for the
// store. Without a key (box nil) secrets stay as they are; already sealed
// ones are kept. b is not modified.
func SealSecrets(b Budget, box *secrets.Box) (Budget, error) {
	b.Channels = slices.Clone(b.Channels)
	for i := range b.Channels {
		c := &b.Channels[i]
		if secrets.IsSealed(c.Secret) {
			continue
		}
		sealed, err := box.Seal(c.Secret, secretContext(b.Name))
		if err != nil {
			return Budget{}, fmt.Errorf("budget %q: seal channels[%d].secret: %w", b.Name, i, err)
		}
		c.Secret = sealed
	}
	return b, nil
}

// OpenSecrets returns b with every channel's secret opened, for delivery.
// Secrets stored before a key was configured are plain and returned as
// they are. Errors name the channel, never the secret. b is not modified.
func OpenSecrets(b Budget, box *secrets.Box) (Budget, error) {
	b.Channels = slices.Clone(b.Channels)
	for i := range b.Channels {
		c := &b.Channels[i]
		plain, err := box.Open(c.Secret, secretContext(b.Name))
		if err != nil {
			return Budget{}, fmt.Errorf("budget %q: open channels[%d].secret: %w", b.Name, i, err)
		}
		c.Secret = plain
	}
	return b, nil
}
