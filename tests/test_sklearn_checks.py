"""scikit-learn's own estimator checks over InfoCatVAE."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from catvae_sklearn import InfoCatVAE

# Small and quick: the checks fit dozens of times on data of 20 to 50 rows,
# where the default batch of 256 would make each epoch a single step.
FAST = dict(
    hidden_layer_sizes=(32,), batch_size=16, max_iter=20, pretrain_iter=5, random_state=0
)


@parametrize_with_checks([InfoCatVAE(n_clusters=3, **FAST)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
