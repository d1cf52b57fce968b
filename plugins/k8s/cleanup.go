package k8s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/jtarchie/pocketci/orchestra"
)

// removeNamespace deletes the pods of namespace and waits until they are
// gone, then its PVCs, and waits for those and for the PVs the cluster
// deletes with them (reclaim policy Delete). It continues past failures.
func removeNamespace(ctx context.Context, client kubernetes.Interface, kns, namespace string) error {
	var errs []error
	sel := metav1.ListOptions{LabelSelector: namespaceSelector(namespace)}
	grace := int64(1)
	pods := client.CoreV1().Pods(kns)
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, sel); err != nil {
		// Nothing was deleted (an unreachable cluster, no permission):
		// waiting for the pods to go would only last until the timeout.
		errs = append(errs, fmt.Errorf("k8s: delete pods of namespace %q: %w", namespace, err))
	} else if err := waitGone(ctx, "pods", func() ([]string, error) { return podsOf(ctx, client, kns, namespace) }); err != nil {
		errs = append(errs, err)
	}
	claims := client.CoreV1().PersistentVolumeClaims(kns)
	list, err := claims.List(ctx, sel)
	if err != nil {
		errs = append(errs, fmt.Errorf("k8s: list volumes of namespace %q: %w", namespace, err))
		return errors.Join(errs...)
	}
	var uids []string
	for _, c := range list.Items {
		if c.Annotations[LabelNamespace] == namespace {
			uids = append(uids, string(c.UID))
		}
	}
	if len(uids) == 0 {
		return errors.Join(errs...)
	}
	// A claim deleted while its volume is being provisioned still gets that
	// volume a moment later (Released, reclaimed later still): wait, bounded,
	// until no provisioning is in flight.
	provisioned, cancel := context.WithTimeout(ctx, provisionWait)
	if err := waitGone(provisioned, "volumes being provisioned", func() ([]string, error) { return claimsOf(provisioned, client, kns, namespace, true) }); err != nil {
		errs = append(errs, err)
	}
	cancel()
	if err := claims.DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		errs = append(errs, fmt.Errorf("k8s: delete volumes of namespace %q: %w", namespace, err))
	}
	if err := waitGone(ctx, "volumes", func() ([]string, error) { return claimsOf(ctx, client, kns, namespace, false) }); err != nil {
		errs = append(errs, err)
	}
	if err := waitGone(ctx, "persistent volumes", func() ([]string, error) { return deletablePVsOf(ctx, client, uids) }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitGone polls list until it is empty or ctx ends.
func waitGone(ctx context.Context, what string, list func() ([]string, error)) error {
	for {
		left, err := list()
		if err == nil && len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("k8s: waiting for %s to go: %w", what, err)
			}
			return fmt.Errorf("k8s: %s still there: %s: %w", what, strings.Join(left, ", "), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func podsOf(ctx context.Context, client kubernetes.Interface, kns, namespace string) ([]string, error) {
	list, err := client.CoreV1().Pods(kns).List(ctx, metav1.ListOptions{LabelSelector: namespaceSelector(namespace)})
	if err != nil {
		return nil, fmt.Errorf("k8s: list pods of namespace %q: %w", namespace, err)
	}
	var left []string
	for _, p := range list.Items {
		if p.Annotations[LabelNamespace] == namespace {
			left = append(left, fmt.Sprintf("pod %s/%s (%s)", kns, p.Name, p.Status.Phase))
		}
	}
	return left, nil
}

// claimsOf lists the namespace's claims; with provisioning, only those
// whose volume a provisioner is making: Pending with a storage-provisioner
// annotation (set once the controller decided to provision; a
// WaitForFirstConsumer claim without a pod has none).
func claimsOf(ctx context.Context, client kubernetes.Interface, kns, namespace string, provisioning bool) ([]string, error) {
	list, err := client.CoreV1().PersistentVolumeClaims(kns).List(ctx, metav1.ListOptions{LabelSelector: namespaceSelector(namespace)})
	if err != nil {
		return nil, fmt.Errorf("k8s: list volumes of namespace %q: %w", namespace, err)
	}
	var left []string
	for _, c := range list.Items {
		_, provisioner := c.Annotations["volume.kubernetes.io/storage-provisioner"]
		if c.Annotations[LabelNamespace] == namespace && (!provisioning || c.Status.Phase == corev1.ClaimPending && provisioner) {
			left = append(left, fmt.Sprintf("pvc %s/%s (%s)", kns, c.Name, c.Status.Phase))
		}
	}
	return left, nil
}

// provisionWait bounds the wait for volumes being provisioned at Close.
const provisionWait = time.Minute

// deletablePVsOf lists the PVs bound to the claims with these UIDs whose
// reclaim policy is Delete (a Retain PV is the cluster admin's to keep).
func deletablePVsOf(ctx context.Context, client kubernetes.Interface, uids []string) ([]string, error) {
	list, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("k8s: list persistent volumes: %w", err)
	}
	want := map[string]bool{}
	for _, u := range uids {
		want[u] = true
	}
	var left []string
	for _, pv := range list.Items {
		if pv.Spec.ClaimRef != nil && want[string(pv.Spec.ClaimRef.UID)] &&
			pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
			left = append(left, fmt.Sprintf("pv %s (%s, claim %s/%s)", pv.Name, pv.Status.Phase, pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name))
		}
	}
	return left, nil
}

// Leaks asks the cluster (not any driver's memory) for every pod and PVC
// labelled with namespace, and every PV still bound to a claim of the
// namespace's name prefix, and describes each one. Empty means nothing of
// the namespace is left. cfg names the cluster and the Kubernetes
// namespace, as for New.
func Leaks(ctx context.Context, cfg Config, namespace string) ([]string, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("k8s: leaks: %w", err)
	}
	client, err := kubernetes.NewForConfig(s.rest)
	if err != nil {
		return nil, fmt.Errorf("k8s: client: %w", err)
	}
	kns := s.k8sNamespace
	left, err := podsOf(ctx, client, kns, namespace)
	if err != nil {
		return nil, err
	}
	claims, err := claimsOf(ctx, client, kns, namespace, false)
	if err != nil {
		return nil, err
	}
	left = append(left, claims...)
	pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("k8s: list persistent volumes: %w", err)
	}
	// A claim's name starts with the namespace's part of SafeName.
	prefix := strings.TrimSuffix(claimName(namespace, "x"), "x")
	if orchestra.SafeName(orchestra.DNSLabelRule, namespace, "x") != namespace+"-x" {
		prefix = "" // the namespace needed sanitizing: no reliable prefix
	}
	for _, pv := range pvs.Items {
		if r := pv.Spec.ClaimRef; r != nil && r.Namespace == kns && prefix != "" && strings.HasPrefix(r.Name, prefix) {
			left = append(left, fmt.Sprintf("pv %s (%s, claim %s/%s)", pv.Name, pv.Status.Phase, r.Namespace, r.Name))
		}
	}
	return left, nil
}
