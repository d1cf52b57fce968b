package k8s

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/jtarchie/pocketci/orchestra"
)

// Volume is a PersistentVolumeClaim labelled with the namespace.
type Volume struct {
	d     *Driver
	name  string
	claim string
}

var _ orchestra.Volume = (*Volume)(nil)

// Name is the volume's name as given to CreateVolume.
func (v *Volume) Name() string { return v.name }

// Path is where the volume is in the cluster, since its files are not on
// this machine: "pvc://<Kubernetes namespace>/<claim name>" (kubectl -n
// <namespace> get pvc <claim name>).
func (v *Volume) Path() string { return "pvc://" + v.d.cfg.k8sNamespace + "/" + v.claim }

// Cleanup deletes the PVC (the cluster deletes or keeps its PV by the
// StorageClass's reclaim policy). It is idempotent.
func (v *Volume) Cleanup(ctx context.Context) error {
	err := v.d.client.CoreV1().PersistentVolumeClaims(v.d.cfg.k8sNamespace).Delete(ctx, v.claim, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("k8s: cleanup of volume %q (pvc %s): %w", v.name, v.claim, err)
	}
	return nil
}

// CreateVolume creates, or returns the existing, PVC "{namespace}-{name}"
// (sanitized) in the configured StorageClass, ReadWriteOnce. size is in MiB;
// 0 asks for the configured default (volume_size, POCKETCI_K8S_VOLUME_SIZE,
// 1Gi). An existing claim keeps its size.
func (d *Driver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("k8s: create volume: %w", err)
	}
	if size < 0 || size > maxSizeGB<<10 {
		return nil, fmt.Errorf("k8s: create volume %q: %w: size %d MiB is negative or over 1 PiB", name, orchestra.ErrInvalidTask, size)
	}
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("k8s: create volume %q: %w", name, orchestra.ErrClosed)
	}
	v, err := d.createVolume(ctx, name, int64(size)<<20)
	if err != nil {
		return nil, fmt.Errorf("k8s: %w", err)
	}
	return v, nil
}

// createVolume does CreateVolume's work with a size in bytes (0: the
// default); the caller holds lifecycle.
func (d *Driver) createVolume(ctx context.Context, name string, sizeBytes int64) (*Volume, error) {
	claim := claimName(d.namespace, name)
	q := d.cfg.volumeSize
	if sizeBytes > 0 {
		q = *resource.NewQuantity(sizeBytes, resource.BinarySI)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:        claim,
			Namespace:   d.cfg.k8sNamespace,
			Labels:      map[string]string{LabelNamespace: labelValue(d.namespace), LabelVolume: labelValue(name)},
			Annotations: map[string]string{LabelNamespace: d.namespace, LabelVolume: name},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: d.cfg.storageClass,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: q}},
		},
	}
	_, err := d.client.CoreV1().PersistentVolumeClaims(d.cfg.k8sNamespace).Create(ctx, pvc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, gerr := d.client.CoreV1().PersistentVolumeClaims(d.cfg.k8sNamespace).Get(ctx, claim, metav1.GetOptions{})
		if gerr != nil {
			return nil, fmt.Errorf("get volume %q (pvc %s): %w", name, claim, gerr)
		}
		if got.Annotations[LabelNamespace] != d.namespace || got.Annotations[LabelVolume] != name {
			return nil, fmt.Errorf("volume %q: pvc %s exists and belongs to namespace %q volume %q", name, claim, got.Annotations[LabelNamespace], got.Annotations[LabelVolume])
		}
		if got.DeletionTimestamp != nil {
			return nil, fmt.Errorf("volume %q: pvc %s is being deleted", name, claim)
		}
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("create volume %q (pvc %s): %w", name, claim, err)
	}
	return &Volume{d: d, name: name, claim: claim}, nil
}
