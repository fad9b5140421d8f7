package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/warden-sre/warden/internal/kubeclient"
	"github.com/warden-sre/warden/remediator"
)

const simulateCommand = "simulate"

// simulateFlags are the flags of `warden-remediator simulate`; the policy,
// Prometheus and kubeconfig flags are the server's.
type simulateFlags struct {
	from, to       string
	output         string
	alertsFile     string
	step           time.Duration
	groupWait      time.Duration
	repeatInterval time.Duration
}

func (s *simulateFlags) addCommand(app *kingpin.Application) {
	cmd := app.Command(simulateCommand, "Replay a history of alerts through the policy and print what it would have done; changes nothing. "+
		"The history is ALERTS from --prometheus.url, or saved webhook bodies from --alerts. With --kubeconfig, namespaces and Deployments are read (never written) for freeze annotations and recent rollouts.")
	cmd.Flag("from", "Start of the simulated period: RFC 3339 or Unix seconds.").Required().StringVar(&s.from)
	cmd.Flag("to", "End of the simulated period: RFC 3339 or Unix seconds.").Required().StringVar(&s.to)
	cmd.Flag("output", "Report format.").Default(remediator.SimOutputText).EnumVar(&s.output, remediator.SimOutputText, remediator.SimOutputMarkdown, remediator.SimOutputJSON)
	cmd.Flag("alerts", "Saved Alertmanager webhook bodies to replay instead of Prometheus's history: a JSON array or JSON lines of payloads, each with a receivedAt field (RFC 3339).").Default("").StringVar(&s.alertsFile)
	cmd.Flag("query.step", "Step of the range queries over ALERTS (default: the evaluation interval from Prometheus's configuration).").Default("0s").DurationVar(&s.step)
	cmd.Flag("alertmanager.group-wait", "Alertmanager's group_wait: the first delivery of an alert read from Prometheus comes this long after it fired.").Default("30s").DurationVar(&s.groupWait)
	cmd.Flag("alertmanager.repeat-interval", "Alertmanager's repeat_interval: a firing alert is delivered again this often.").Default("4h").DurationVar(&s.repeatInterval)
}

// parseSimTime reads RFC 3339 or Unix seconds.
func parseSimTime(flag, v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.UnixMilli(int64(f * 1000)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("--%s: %q is neither RFC 3339 nor Unix seconds", flag, v)
}

// runSimulate runs `warden-remediator simulate` and returns the exit code:
// the report goes to out, errors to the log.
func runSimulate(f *flags, out io.Writer, logger *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := simulate(ctx, f, out, logger); err != nil {
		logger.Error("simulation failed", "err", err)
		return 1
	}
	return 0
}

func simulate(ctx context.Context, f *flags, out io.Writer, logger *slog.Logger) error {
	s := f.simulate
	from, err := parseSimTime("from", s.from)
	if err != nil {
		return err
	}
	to, err := parseSimTime("to", s.to)
	if err != nil {
		return err
	}
	if !to.After(from) {
		return errors.New("--to must be after --from")
	}
	if (s.alertsFile == "") == (f.prometheusURL == "") {
		return errors.New("set exactly one of --prometheus.url (replay ALERTS) and --alerts (replay saved webhook bodies)")
	}
	if s.step < 0 || s.groupWait < 0 || s.repeatInterval < 0 {
		return errors.New("--query.step, --alertmanager.group-wait and --alertmanager.repeat-interval must not be negative")
	}
	policy, err := remediator.LoadPolicy(f.configFile)
	if err != nil {
		return err
	}
	opts := remediator.SimulateOptions{From: from, To: to, Logger: logger}
	var in remediator.SimulationInput
	if s.alertsFile != "" {
		file, err := os.Open(s.alertsFile)
		if err != nil {
			return fmt.Errorf("--alerts: %w", err)
		}
		ns, err := remediator.ReadNotifications(file)
		file.Close()
		if err != nil {
			return fmt.Errorf("--alerts %s: %w", s.alertsFile, err)
		}
		in = remediator.SimulationInput{Periods: remediator.PeriodsFromNotifications(ns), Notifications: ns}
		opts.Source = "webhook bodies from " + s.alertsFile
	} else {
		client, err := httpClient("prometheus", f.prometheusURL, f.prometheusHTTP)
		if err != nil {
			return err
		}
		step := s.step
		if step == 0 {
			if step, err = remediator.EvaluationInterval(ctx, client, f.prometheusURL); err != nil {
				return fmt.Errorf("evaluation interval (set --query.step): %w", err)
			}
		}
		periods, err := remediator.QueryAlertHistory(ctx, client, f.prometheusURL, from, to, step)
		if err != nil {
			return err
		}
		model := remediator.DeliveryModel{GroupWait: s.groupWait, RepeatInterval: s.repeatInterval}
		in = remediator.SimulationInput{Periods: periods, Notifications: remediator.NotificationsFromPeriods(periods, from, to, model)}
		opts.Source = fmt.Sprintf("ALERTS from %s (step %s, group_wait %s, repeat_interval %s)", f.prometheusURL, step, s.groupWait, s.repeatInterval)
	}
	if f.kubeconfig != "" {
		var kube kubernetes.Interface
		if kube, err = kubeclient.New(kubeclient.Options{Kubeconfig: f.kubeconfig, UserAgent: "warden-remediator-simulate"}); err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
		opts.Kube = kube
	}
	rep, err := remediator.Simulate(ctx, policy, in, opts)
	if err != nil {
		return err
	}
	return rep.Write(out, s.output)
}
