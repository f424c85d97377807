package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

const reshardLong = `Lays the report path's shards out again over a Redis Cluster's masters, one
per master, while the replicas run (docs/SHARDING.md, "Growing a Cluster").
Run it after growing the Cluster (redis-cli --cluster add-node, then
rebalance) if the replicas run with --redis-reshard=false; otherwise they do
it by themselves a minute or two after the rebalance. Without --force it
does nothing when every master already holds a shard.

It talks to Redis, not to a replica: --redis-url and --redis-prefix as the
replicas have them (or CONTROLPLANE_REDIS_URL and CONTROLPLANE_REDIS_PREFIX).

` + exitCodesHelp + ` A reshard under way elsewhere exits 5; Redis out of
reach, 6.`

func newRedisCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "redis",
		Short: "operate the Redis store",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newReshardCmd(lookupEnv))
	return cmd
}

func newReshardCmd(lookupEnv func(string) (string, bool)) *cobra.Command {
	var url, prefix string
	var force bool
	cmd := &cobra.Command{
		Use:   "reshard",
		Short: "lay the report path's shards out again over a grown Redis Cluster",
		Long:  reshardLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v, ok := lookupEnv(envPrefix + "REDIS_URL"); ok && !cmd.Flags().Changed("redis-url") {
				url = v
			}
			if v, ok := lookupEnv(envPrefix + "REDIS_PREFIX"); ok && v != "" && !cmd.Flags().Changed("redis-prefix") {
				prefix = v
			}
			if !strings.HasPrefix(url, "redis+cluster://") {
				return usageError(fmt.Errorf("--redis-url: %q is not a redis+cluster:// URL: only a Cluster has shards to lay out", redisstore.RedactURL(url)))
			}
			client, err := redisstore.NewClient(url)
			if err != nil {
				return usageError(fmt.Errorf("--redis-url: %w", err))
			}
			defer func() { _ = client.Close() }()
			ctx := cmd.Context()
			// A prefix no replica uses would get a store of its own here:
			// refuse it before anything is written.
			switch n, err := client.Exists(ctx, "{"+prefix+"}:shards").Result(); {
			case err != nil:
				return &codedError{code: exitUnavailable, err: fmt.Errorf("redis: %w", err)}
			case n == 0:
				return &codedError{code: exitNotFound, err: fmt.Errorf("no shard list under the prefix %q: no replica has used this Cluster with it", prefix)}
			}
			s, err := redisstore.New(ctx, client, redisstore.Options{Prefix: prefix})
			if err != nil {
				return usageError(err)
			}
			defer func() { _ = s.Close() }()
			res, err := s.Reshard(ctx, force)
			switch {
			case errors.Is(err, redisstore.ErrReshardBusy):
				return &codedError{code: exitConflict, err: err}
			case errors.Is(err, store.ErrUnavailable):
				return &codedError{code: exitUnavailable, err: err}
			case err != nil:
				return err
			}
			out := cmd.OutOrStdout()
			if res.From == res.To {
				fmt.Fprintf(out, "every master holds a shard: generation %d, shards %s unchanged\n", res.To, strings.Join(res.Tags, " "))
				return nil
			}
			fmt.Fprintf(out, "generation %d -> %d: shards %s\n", res.From, res.To, strings.Join(res.Tags, " "))
			fmt.Fprintf(out, "moved %d ledgers and %d clients' seqs; the report path was fenced for %v\n", res.Ledgers, res.Seqs, res.Fenced)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "redis-url", "", "the replicas' Redis Cluster URL, redis+cluster://")
	cmd.Flags().StringVar(&prefix, "redis-prefix", "tsc", "the replicas' prefix of every Redis key")
	cmd.Flags().BoolVar(&force, "force", false, "lay the shards out again even if every master holds one")
	return cmd
}
