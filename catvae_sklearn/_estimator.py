"""The scikit-learn estimator :class:`InfoCatVAE`."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory, validate_data

from . import _persistence
from ._device import (
    cpu_bfloat16_pays,
    data_device,
    decode_threshold,
    fixed_noise,
    map_batches,
    restore_device,
    resolve_device,
    seeded,
    to_tensor,
)
from ._model import BERNOULLI, GAUSSIAN, CategoricalVAE
from ._starts import resolve_init
from ._threads import CoreShare
from ._training import (
    Phases,
    TrainingConfig,
    current_partition_guide,
    feature_scale,
    guided,
    initial_guide,
    stream_guide,
    train,
)

# Rows per inference batch, chosen so one batch stays in a few hundred MiB
# of working memory whatever the number of features.
_INFERENCE_ELEMENTS = 2**24
# Rows per inference batch at most. Every batch is padded to the same number
# of rows, which depends on the model alone: a matrix library may compute a
# product of a few rows along another code path than one of many, so without
# padding a row's float32 outputs could move in the last bit with the number
# of rows it arrived with.
_INFERENCE_ROWS = 256
# Reparameterisation draws per row in score_samples, shared by all rows so a
# row's score does not depend on which rows it is batched with. Each draw
# costs K decoder passes per row; one keeps the estimate unbiased, and its
# noise averages out in score(), the mean over rows.
_SCORE_NOISE_SAMPLES = 1


class InfoCatVAE(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator
):
    """Information-maximising categorical variational autoencoder.

    A clusterer in the style of :class:`~sklearn.cluster.KMeans` and
    :class:`~sklearn.mixture.GaussianMixture`, after Pineau & Lelarge (2018),
    *InfoCatVAE: Representation Learning with Categorical Variational
    Autoencoders*, arXiv:1806.08240.

    Each of the ``n_clusters`` clusters owns a block of ``subspace_dim``
    coordinates of the latent space ``z`` (dimension ``n_clusters *
    subspace_dim``). The prior is ``p(c)`` uniform and ``p(z|c) = N(mu_c, I)``
    with ``mu_c`` equal to ``prior_scale`` on the block of cluster ``c`` and 0
    elsewhere. The encoder gives ``q(c|x)`` and one Gaussian ``q(z|x,c)`` per
    cluster; the decoder gives ``p(x|z)``. Training maximises the evidence
    lower bound (ELBO) plus an information term that makes points generated
    from cluster ``c`` recognisable as ``c``.

    Read more in the user guide (``docs/user_guide.rst``).

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters ``K``, at least 1. Without labels, choose it with
        a grid search and a label-free score such as
        :func:`~catvae_sklearn.metrics.latent_silhouette_scorer`.

    subspace_dim : int, default=2
        Dimensions ``delta`` of each cluster's latent subspace, at least 1.
        Small values keep clusters compact; larger ones let a cluster
        describe more within-cluster variation (style, thickness, ...), and
        can let one cluster absorb another.

    hidden_layer_sizes : tuple of int, default=(500,)
        Widths of the encoder's hidden layers; the decoder mirrors them. The
        decoder runs once for each cluster a sample is evaluated under (see
        ``min_decode_proba``), so its width sets most of the cost. When the
        start trains an autoencoder (see ``pretrain_iter``) and the first
        width is 500, as the autoencoder's is, the encoder's first layer
        starts from the autoencoder's instead of at random, which helps
        ``predict`` on rows the fit did not see.

    prior_scale : float, default=5.0
        ``lambda`` > 0, the distance of each cluster's prior mean from the
        origin along its own block. Prior means are ``prior_scale *
        sqrt(2)`` apart, so a draw from ``p(z|c)`` lies nearer another
        cluster's mean than its own with probability ``Phi(-prior_scale /
        sqrt(2))`` for each other cluster: with 5, under 1% of draws for up
        to 50 clusters, so ``sample(cluster=c)`` decodes as cluster ``c``.
        With 3, about 1.7% per other cluster; much smaller values let
        clusters blend.

    info_weight : float, default=10.0
        Weight (>= 0) of the information term: points decoded from
        ``z ~ p(z|c)`` are re-encoded and scored by the cross-entropy of
        ``q(c|x)`` against ``c``. 0 gives the paper's plain CatVAE. The
        cross-entropy is at most ``log K`` nats while the ELBO sums over
        features, so weights near 1 have little effect; with 10 to 20 each
        cluster's samples re-encode to it.

    balance_weight : float, default=1.0
        Weight (>= 0) of ``KL(mean_batch q(c|x) || p(c))``, an addition to
        the paper that stops every point choosing the same cluster. 0 gives
        the paper's objective.

    min_decode_proba : float in [0, 1] or "auto", default="auto"
        During training, a sample's reconstruction and latent KL are
        computed only under the clusters with ``q(c|x)`` at least this, and
        always its most likely one; the skipped clusters enter the loss with
        that sample's worst computed fit and no gradient, so the encoder
        still moves away from them. A trained posterior is peaked, so this
        is one to a few clusters a sample where the exact ELBO costs ``K``
        decodes: training grows far more slowly with ``K``. 0 computes every
        cluster, the exact gradient of the ELBO as in the paper. ``"auto"``
        is 0.01 on the CPU and 0 on CUDA and MPS, which decode every
        cluster at once. ``score_samples``, ``score`` and early stopping
        always use the exact ELBO.

    likelihood : {"auto", "bernoulli", "gaussian"}, default="auto"
        Decoder distribution. ``"bernoulli"`` for data in [0, 1] (pixels);
        ``"gaussian"`` (with one learned variance per feature) for real-valued
        data, standardised inside the network. ``"auto"`` picks Bernoulli
        when every training value lies in [0, 1], else Gaussian.

    init_params : {"auto", "tsne", "gmm", "kmeans", "spectral", \
            "autoencoder", "random"}, default="auto"
        Where the partition starts. Every option but ``"random"`` computes
        initial cluster labels and adds a cross-entropy that steers
        ``q(c|x)`` towards them (see ``guide_iter``); data with a Gaussian
        likelihood are standardised first, wide data reduced by PCA to 50
        dimensions.

        - ``"tsne"``: a Gaussian mixture on a 2-D t-SNE map of the
          principal components, joined where they lose part of the data by
          the embedding of an autoencoder (see ``pretrain_iter``; t-SNE and
          the autoencoder see at most 20,000 rows, the others take their
          nearest neighbour's label). Of 10 mixture fits it keeps the one
          whose clusters are best separated on the map and closest to
          equal in size (silhouette plus the normalised entropy of the
          sizes), which need not be the likeliest. Follows curved,
          elongated classes such as handwritten digits.
        - ``"gmm"``: a Gaussian mixture on the data, with full, tied,
          diagonal or spherical covariances, whichever has the lowest BIC
          among the fits whose clusters each hold enough rows to estimate
          their covariance. Suits tabular data.
        - ``"auto"``: ``"tsne"`` for more than 50 features, ``"gmm"``
          otherwise.
        - ``"kmeans"``: k-means on the data. ``"spectral"``: spectral
          clustering of a 10-nearest-neighbour graph.
        - ``"autoencoder"``: k-means on the autoencoder's embedding alone
          (on the data itself with ``pretrain_iter=0``).
        - ``"random"``: random weights and no guide, as in the paper.

        The user guide compares them; the benchmarks page has the figures.

    pretrain_iter : int or "auto", default="auto"
        Training epochs (>= 0) of the autoencoder (500-500-10 units) whose
        embedding the ``"tsne"`` and ``"autoencoder"`` starts use, and whose
        first layer the model's encoder starts from; most of a default fit's
        time on image data. It trains under bfloat16 autocast on CPUs with
        native bfloat16 instructions (AVX-512 BF16 or AMX) and on CUDA, in
        float32 elsewhere. 0 leaves the ``"tsne"`` map to the principal
        components alone. ``"auto"`` trains it 50 epochs for the
        ``"autoencoder"`` start, and for the ``"tsne"`` start only where the
        50 principal components leave more than 1% of the data's variance
        out (such as MNIST's 784 pixels, not the 64 of scikit-learn's
        digits): where they keep nearly all of it, the map of the components
        alone is as good or better, and the fit several times faster.

    guide_iter : int or None, default=None
        How long the pull towards the initial labels lasts. ``None`` keeps
        it at full weight through training: the network then models the
        starting partition, which it otherwise drifts away from. An integer
        makes the weight fall linearly to zero over that many epochs
        (``partial_fit`` calls), after which the paper's objective alone is
        trained. 0 turns the guide off.

    batch_size : int or "auto", default="auto"
        Mini-batch size, clipped to the number of training samples. ``"auto"``
        is ``min(256, max(16, n_samples // 32))``: at least 32 optimiser
        steps per epoch, so a small data set trains as well as a large one.

    learning_rate_init : float, default=3e-3
        Adam's learning rate (> 0) for training. It goes with ``max_iter``:
        the default pair reaches in 12 epochs the partition and ELBO that
        1e-3 reaches in 20. Lower it if training diverges (a warning says
        so). The start's autoencoder trains at 1e-3 whatever this is, so the
        start does not depend on it and a search over it reuses one cached
        start.

    max_iter : int, default=12
        Maximum number of training epochs (>= 1) after the start. Training
        time grows with it, and a search trains anew for every
        ``n_clusters`` and ``subspace_dim``; fewer epochs leave a lower
        ELBO and a slightly less accurate partition, which training goes
        on refining from the start. With a lower ``learning_rate_init``,
        raise it.

    tol : float, default=1e-4
        Relative improvement of the monitored loss below which an epoch
        counts as no improvement.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data, monitor its negative
        ELBO, stop after ``n_iter_no_change`` epochs without improvement and
        keep the best weights.

    validation_fraction : float, default=0.1
        Share of the data held out when ``early_stopping=True``, in (0, 1).

    n_iter_no_change : int, default=10
        Epochs without improvement by ``tol`` before training stops.

    warm_start : bool, default=False
        When True and the model is fitted, :meth:`fit` continues training
        from the current weights (and optimiser state) instead of starting
        afresh; architecture parameters must not change in between. The
        continued training is guided (see ``guide_iter``, whose schedule
        counts on from the epochs already run) towards the clusters the
        model gives the rows at the call, so it refines the partition
        reached rather than drifting away from it.

    device : str, default="auto"
        Torch device. ``"auto"`` uses CUDA when available, else Apple's MPS,
        else the CPU. ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` name one.
        On CUDA, training keeps the data on the GPU when they take at most
        half of its free memory and otherwise streams batches from pinned
        host memory, runs its forward pass in bfloat16 mixed precision
        where the GPU supports it, and replays each training step from a
        CUDA graph. On a CPU that multiplies bfloat16 natively (AVX-512
        BF16 or AMX), the autoencoder of the start, and training on batches
        of many features (about 100,000 values a batch and more), also run
        in bfloat16. Every other method computes in float32.

    memory : str, joblib.Memory or None, default=None
        Where to cache what the start computes before ``subspace_dim``
        matters (the autoencoder's embedding, the principal components and
        the t-SNE map, then the mixture's labels for each ``n_clusters``):
        a folder or a :class:`joblib.Memory`, as in
        :class:`~sklearn.pipeline.Pipeline`. A search over ``n_clusters`` and
        ``subspace_dim`` then computes the map once per training set and
        the labels once per training set and ``n_clusters``, instead of
        once per fit, with the same result. ``None`` caches nothing.

    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, mini-batch order, sampling and the
        start (t-SNE, mixture or k-means). An int gives identical results on
        refit on the CPU with the same number of threads. A fit takes fewer
        threads while other processes keep cores busy, and another number of
        threads, a GPU (whose atomic additions and kernel choices can move
        results in the last bits between runs) or another processor can
        reach a different fit from the same seed: the start and training
        amplify last-bit differences (on the CPU, those of the start's
        autoencoder). For fits that must match whatever else runs, fit on one
        thread (``threadpoolctl.threadpool_limits(1)`` or
        ``torch.set_num_threads(1)``), or share one start through ``memory``.

    verbose : int, default=0
        ``1`` prints a line as each phase of a fit ends (the autoencoder,
        the map, the mixture, training) with its seconds, and shows progress
        bars over the autoencoder's and the model's epochs. ``0`` prints
        nothing.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample (argmax of ``q(c|x)``).

    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Decoded prior means: what the model considers each cluster's typical
        point, in data space.

    likelihood_ : {"bernoulli", "gaussian"}
        The decoder distribution used.

    device_ : str
        Device the fitted model lives on.

    n_iter_ : int
        Training epochs run after the start, counted on across the fits of a
        warm start and the calls of :meth:`partial_fit`; the autoencoder's
        epochs are not included.

    phase_seconds_ : dict of str to float
        Wall-clock seconds of each phase of the last call of :meth:`fit` or
        :meth:`partial_fit`: ``"autoencoder"``, ``"map"`` (the principal
        components and the t-SNE map; ``"features"`` for the other starts),
        ``"mixture"`` (``"clusters"`` for k-means and spectral starts),
        ``"training"``; a phase that did not run is absent.

    loss_curve_ : list of float
        Mean negative ELBO per sample (nats) of each training epoch, as
        estimated during training: with ``min_decode_proba > 0`` each
        sample's unlikely clusters count at its worst computed fit.

    validation_scores_ : list of float or None
        Mean held-out ELBO per epoch when ``early_stopping=True``.

    module_ : torch.nn.Module
        The fitted network.

    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (n_features,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.cluster.KMeans : Hard clustering around centroids.
    sklearn.mixture.GaussianMixture : Soft clustering with Gaussian components.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from catvae_sklearn import InfoCatVAE
    >>> X = load_digits().data / 16.0
    >>> model = InfoCatVAE(n_clusters=10, max_iter=5, random_state=0).fit(X)
    >>> model.predict(X[:3]).shape
    (3,)
    >>> model.predict_proba(X[:3]).sum(axis=1).round(6)
    array([1., 1., 1.])
    >>> model.transform(X[:3]).shape
    (3, 20)
    >>> X_new, y_new = model.sample(4, cluster=2)
    >>> y_new
    array([2, 2, 2, 2])
    """

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "subspace_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "prior_scale": [Interval(Real, 0, None, closed="neither")],
        "info_weight": [Interval(Real, 0, None, closed="left")],
        "balance_weight": [Interval(Real, 0, None, closed="left")],
        "min_decode_proba": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "likelihood": [StrOptions({"auto", BERNOULLI, GAUSSIAN})],
        "init_params": [StrOptions({"auto", "tsne", "gmm", "kmeans", "spectral", "autoencoder", "random"})],
        "pretrain_iter": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "guide_iter": [Interval(Integral, 0, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "device": [str],
        "memory": [None, str, HasMethods(["cache"])],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_clusters=10,
        subspace_dim=2,
        *,
        hidden_layer_sizes=(500,),
        prior_scale=5.0,
        info_weight=10.0,
        balance_weight=1.0,
        min_decode_proba="auto",
        likelihood="auto",
        init_params="auto",
        pretrain_iter="auto",
        guide_iter=None,
        batch_size="auto",
        learning_rate_init=3e-3,
        max_iter=12,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        warm_start=False,
        device="auto",
        memory=None,
        random_state=None,
        verbose=0,
    ):
        self.n_clusters = n_clusters
        self.subspace_dim = subspace_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.prior_scale = prior_scale
        self.info_weight = info_weight
        self.balance_weight = balance_weight
        self.min_decode_proba = min_decode_proba
        self.likelihood = likelihood
        self.init_params = init_params
        self.pretrain_iter = pretrain_iter
        self.guide_iter = guide_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.device = device
        self.memory = memory
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. Dense numeric arrays or DataFrames; values in
            [0, 1] for a Bernoulli likelihood. Sparse matrices are refused
            with a ``TypeError``: the network needs dense rows and training
            keeps the data on the device, so densify explicitly
            (``X.toarray()``) when it fits in memory, or stream dense chunks
            to :meth:`partial_fit`.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : InfoCatVAE
            The fitted estimator.
        """
        continuing = self.warm_start and hasattr(self, "module_")
        X = self._validate_input(X, reset=not continuing)
        n_samples = X.shape[0]
        if not continuing:
            self._check_enough_samples(n_samples)
        rng = check_random_state(self.random_state)
        seed = training_seed(rng)

        X_train, X_val = X, None
        if self.early_stopping:
            order = rng.permutation(n_samples)
            n_val = max(1, int(round(self.validation_fraction * n_samples)))
            if n_samples - n_val < self.n_clusters:
                raise ValueError(
                    f"early_stopping leaves {n_samples - n_val} training samples, "
                    f"fewer than n_clusters={self.n_clusters}; lower "
                    "validation_fraction or set early_stopping=False."
                )
            X_val, X_train = X[order[:n_val]], X[order[n_val:]]

        if continuing:
            self._check_warm_start_compatible()
            device = self.module_.device
        else:
            device = self._initialise(X, seed)
        config = self._training_config(X_train.shape[0], self.max_iter, seed, device)
        phases = Phases(self.verbose)
        with CoreShare(), seeded(seed, device):
            module = self.module_.train()
            # On a GPU too small for the data, they stay on the host and
            # training streams them a batch at a time.
            float32_bytes = 4 * (X_train.size + (0 if X_val is None else X_val.size))
            home = data_device(float32_bytes, device)
            X_train_t = to_tensor(X_train, home)
            guide = None
            if not continuing:
                self._set_data_scale(X_train_t)
                start = resolve_init(self.init_params, self.n_features_in_)
                guide = initial_guide(
                    module, X_train_t, start, config, check_memory(self.memory), phases
                )
            elif guided(self.init_params, self.guide_iter):
                guide = current_partition_guide(self._clusters(X_train_t), X_train_t)
            with phases("training"):
                result, self._optimizer = train(
                    module,
                    X_train_t,
                    None if X_val is None else to_tensor(X_val, home),
                    config,
                    optimizer=self._optimizer if continuing else None,
                    guide=guide,
                    guide_offset=self.n_iter_ if continuing else 0,
                )
        module.eval()
        self.phase_seconds_ = phases.seconds
        self._record(result, continuing)
        self.labels_ = self.predict(X)
        return self

    def partial_fit(self, X, y=None):
        """Train for one pass over a chunk of data.

        Like :meth:`MiniBatchKMeans.partial_fit
        <sklearn.cluster.MiniBatchKMeans.partial_fit>`: the first call sets
        up the model (likelihood, data scaling and the k-means start are
        taken from that first chunk, which needs at least ``n_clusters``
        rows), later calls continue training. Whatever ``init_params`` says
        (but ``"random"``), the stream starts from k-means on the first
        chunk, since a t-SNE map cannot place rows that arrive later: each
        chunk is guided towards its nearest k-means centres for the first
        ``guide_iter`` calls, or every call when ``guide_iter`` is None.
        On a model that :meth:`fit` or :meth:`load` produced, each chunk is
        instead guided towards the clusters the model gives it, as a warm
        start is (``guide_iter`` counting on from ``n_iter_``).
        ``labels_`` holds the clusters of the last chunk.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : Ignored

        Returns
        -------
        self : InfoCatVAE
        """
        first = not hasattr(self, "module_")
        if first:
            self._validate_params()
        X = self._validate_input(X, reset=first, min_samples=1)
        if first:
            self._check_enough_samples(X.shape[0])
            seed = training_seed(check_random_state(self.random_state))
            device = self._initialise(X, seed)
            self._stream = _Stream(guided(self.init_params, self.guide_iter), seed)
        else:
            self._check_warm_start_compatible()
            device = self.module_.device
        if self._stream is None:
            # Continuing a model that fit() or load() produced: its start is
            # behind it, so no new data scaling, and each chunk is guided
            # towards the clusters the model gives it, as a warm start is.
            self._stream = _Stream(
                guided(self.init_params, self.guide_iter),
                training_seed(check_random_state(self.random_state)),
                calls=self.n_iter_,
                follows_model=True,
            )
        stream = self._stream
        seed = (stream.seed + stream.calls) % np.iinfo(np.int32).max
        config = self._training_config(X.shape[0], 1, seed, device)
        phases = Phases(self.verbose)
        with CoreShare(), seeded(seed, device):
            module = self.module_.train()
            X_t = to_tensor(X, device)
            if first:
                self._set_data_scale(X_t)
            guide = None
            if stream.guided and (self.guide_iter is None or stream.calls < self.guide_iter):
                with phases("clusters"):
                    if stream.follows_model:
                        guide = current_partition_guide(self._clusters(X_t), X_t)
                    else:
                        guide, stream.centres = stream_guide(module, X_t, stream.centres, seed)
            with phases("training"):
                result, self._optimizer = train(
                    module, X_t, None, config, optimizer=self._optimizer,
                    guide=guide, guide_offset=stream.calls,
                )
        module.eval()
        self.phase_seconds_ = phases.seconds
        stream.calls += 1
        self._record(result, continuing=not first)
        self.labels_ = self.predict(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit the model and return the cluster of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, as for :meth:`fit`.
        y : Ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X).labels_

    # ---------------------------------------------------------------- inference
    def predict_proba(self, X):
        """Posterior cluster probabilities ``q(c|x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, fitted or new; each row's probabilities depend on that
            row alone.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters)
            Rows sum to 1.
        """
        X = self._validated_for_inference(X)
        logits = self._apply(self.module_.logits, X, X.shape[1])
        return _softmax(logits.astype(np.float64))

    def predict(self, X):
        """Most probable cluster of each sample, ``argmax_c q(c|x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to assign, fitted or new.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._clusters(self._validated_for_inference(X))

    def transform(self, X):
        """Posterior mean of the latent code, ``E_q[z|x]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to embed; cluster ``c``'s block of coordinates is where
            the samples of cluster ``c`` lie.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_clusters * subspace_dim)
            In the dtype of X when X is float32 or float64.
        """
        X = self._validated_for_inference(X)
        module = self.module_
        Z = self._apply(
            module.posterior_mean, X, X.shape[1] + self.n_clusters * module.latent_dim
        )
        return Z.astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """Decode latent codes to the mean of ``p(x|z)`` in data space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_clusters * subspace_dim)
            Latent codes, e.g. the output of :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        Z = _check_latent(X, self.module_.latent_dim)
        return self._decode_latent(Z).astype(Z.dtype, copy=False)

    def score_samples(self, X):
        """Per-sample evidence lower bound (ELBO) on ``log p(x)``, in nats.

        A Monte Carlo estimate with a fixed set of reparameterisation draws,
        so the same row always gets the same score.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        elbo : ndarray of shape (n_samples,)
        """
        X = self._validated_for_inference(X)
        module = self.module_
        noise = fixed_noise(
            (_SCORE_NOISE_SAMPLES, self.n_clusters, module.latent_dim),
            module.device,
        )
        elbo = self._apply(
            lambda xb: module.elbo(xb, noise=noise)["elbo"],
            X,
            X.shape[1] * self.n_clusters * _SCORE_NOISE_SAMPLES,
        )
        return elbo.astype(np.float64)

    def score(self, X, y=None):
        """Mean per-sample ELBO of X; higher is better.

        Used by :class:`~sklearn.model_selection.GridSearchCV` when no
        ``scoring`` is given, so a search maximises held-out ELBO.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, cluster=None):
        """Generate samples from the fitted model.

        Draws ``c`` from the prior (or from ``cluster``), ``z ~ p(z|c)``, and
        returns the decoder mean of ``p(x|z)``: probabilities for a Bernoulli
        likelihood, means for a Gaussian one.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to generate.
        cluster : int or array-like of int, default=None
            Restrict generation to this cluster or these clusters, chosen
            uniformly among them. ``None`` uses all clusters.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Generated samples.
        y : ndarray of shape (n_samples,)
            Cluster each sample was generated from.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. It must be an "
                "integer >= 1."
            )
        choices = self._checked_clusters(cluster)
        rng = check_random_state(self.random_state)
        y = rng.choice(choices, size=n_samples)
        z = self.module_.prior_means.cpu().numpy()[y] + rng.standard_normal(
            (n_samples, self.module_.latent_dim)
        )
        return self._decode_latent(z.astype(np.float32)), y.astype(np.int64)

    # ---------------------------------------------------------------- persisting
    def save(self, path):
        """Save the fitted model to ``path``.

        The file is a zip archive holding the parameters as JSON and the
        weights as a torch tensor file, with the library version and a
        SHA-256 checksum. :meth:`load` reads it without running any code.
        Two parameters have no such form and are saved as what they stand
        for in a fit: a ``random_state`` that is a ``RandomState`` as None,
        and a ``memory`` that is a :class:`joblib.Memory` as its folder.

        Parameters
        ----------
        path : str or path-like
        """
        check_is_fitted(self)
        _persistence.save(self, path)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        device : str, default=None
            Device to place the model on. By default the model's own
            ``device`` parameter, falling back to the CPU when that device is
            not available here.

        Returns
        -------
        model : InfoCatVAE
        """
        return _persistence.load(cls, path, device)

    def __getstate__(self):
        # BaseEstimator returns the live __dict__ outside sklearn's own classes.
        state = dict(super().__getstate__())
        # Optimiser moments live on the training device and only serve
        # warm starts: a restored model starts a fresh optimiser.
        state.pop("_optimizer", None)
        module = state.pop("module_", None)
        if module is not None:
            state["_module_state"] = _persistence.cpu_state_dict(module)
        return state

    def __setstate__(self, state):
        module_state = state.pop("_module_state", None)
        state.setdefault("_optimizer", None)
        # Pickles of version 0.1.0 kept a stream's state in three attributes.
        calls = state.pop("_stream_calls", None)
        centres = state.pop("_stream_centres", None)
        guided = state.pop("_stream_guided", False)
        seed = state.pop("_seed", 0)
        if "_stream" not in state:
            state["_stream"] = None if calls is None else _Stream(guided, seed, calls, centres)
        super().__setstate__(state)
        if module_state is not None:
            self._restore_module(module_state, None)

    def _restore_module(self, module_state, device):
        """Build the network from ``module_state`` on ``device`` (None: the
        model's own ``device``, or the CPU with a ``DeviceWarning``)."""
        device = restore_device(device, self.device)
        module = CategoricalVAE(**self._module_config)
        module.load_state_dict(module_state)
        self.module_ = module.to(device).eval()
        self.device_ = str(device)

    # ------------------------------------------------------------------ helpers
    @property
    def _n_features_out(self):
        return self.n_clusters * self.subspace_dim

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.non_deterministic = self.random_state is None
        return tags

    def _initialise(self, X, seed):
        """Build the network for data like ``X``; return its device."""
        hidden = self._checked_hidden_layer_sizes()
        self.likelihood_ = self._resolve_likelihood(X)
        device = resolve_device(self.device)
        self._module_config = self._current_module_config(X.shape[1], hidden)
        self._stream = None
        with seeded(seed, device):
            self.module_ = CategoricalVAE(**self._module_config).to(device)
        self.device_ = str(device)
        self._optimizer = None
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None
        return device

    def _current_module_config(self, n_features, hidden):
        return {
            "n_features": n_features,
            "n_clusters": self.n_clusters,
            "subspace_dim": self.subspace_dim,
            "hidden_layer_sizes": hidden,
            "prior_scale": float(self.prior_scale),
            "likelihood": self.likelihood_,
        }

    def _check_warm_start_compatible(self):
        wanted = self._current_module_config(
            self.n_features_in_, self._checked_hidden_layer_sizes()
        )
        if self.likelihood not in ("auto", self.likelihood_):
            wanted["likelihood"] = self.likelihood
        changed = [k for k, v in wanted.items() if self._module_config[k] != v]
        if changed:
            raise ValueError(
                f"Cannot continue training: {', '.join(changed)} changed since the "
                "model was fitted. Set warm_start=False (or use a new estimator) "
                "to fit from scratch."
            )

    def _check_enough_samples(self, n_samples):
        if n_samples < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}."
            )

    def _set_data_scale(self, X):
        """Standardise real-valued data inside the network, from the tensor ``X``."""
        if self.likelihood_ == GAUSSIAN:
            self.module_.set_data_scale(*feature_scale(X))

    def _training_config(self, n_samples, max_iter, seed, device):
        batch_size = self._batch_size(n_samples)
        return TrainingConfig(
            batch_size=batch_size,
            learning_rate=self.learning_rate_init,
            max_iter=max_iter,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            info_weight=self.info_weight,
            balance_weight=self.balance_weight,
            min_decode_proba=decode_threshold(self.min_decode_proba, device),
            pretrain_iter=self.pretrain_iter,
            guide_iter=self.guide_iter,
            seed=seed,
            cpu_bfloat16=cpu_bfloat16_pays(device, batch_size, self.module_.n_features),
            verbose=self.verbose,
            cuda_graph=device.type == "cuda",
        )

    def _record(self, result, continuing):
        """Fold one training run into the fitted attributes."""
        self.n_iter_ = (self.n_iter_ if continuing else 0) + result.n_iter
        self.loss_curve_ = (self.loss_curve_ if continuing else []) + result.loss_curve
        if self.early_stopping:
            previous = self.validation_scores_ if continuing and self.validation_scores_ else []
            self.validation_scores_ = previous + result.validation_scores
        else:
            self.validation_scores_ = None
        self.cluster_centers_ = self._decode_latent(
            self.module_.prior_means.cpu().numpy()
        )

    def _validate_input(self, X, reset, min_samples=None):
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_min_samples=min_samples or (2 if reset else 1),
        )
        # A new fit (reset) checks against the likelihood asked for: the one
        # a previous fit resolved says nothing about these data.
        bernoulli = (self.likelihood if reset else self.likelihood_) == BERNOULLI
        # float32 input cannot leave float32's range: only scan X when a
        # check needs its extremes, and then only once for both.
        if X.dtype == np.float64 or bernoulli:
            low, high = X.min(), X.max()
            _check_float32_range(low, high, "X")
            if bernoulli:
                _check_unit_interval(low, high)
        return X

    def _validated_for_inference(self, X):
        check_is_fitted(self)
        return self._validate_input(X, reset=False)

    def _resolve_likelihood(self, X):
        if self.likelihood != "auto":
            return self.likelihood
        return BERNOULLI if X.min() >= 0.0 and X.max() <= 1.0 else GAUSSIAN

    def _checked_hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        if not all(isinstance(s, Integral) and s >= 1 for s in sizes):
            raise ValueError(
                "hidden_layer_sizes must be a positive integer or a sequence of "
                f"positive integers, got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(s) for s in sizes)

    def _checked_clusters(self, cluster):
        if cluster is None:
            return np.arange(self.n_clusters)
        clusters = np.atleast_1d(np.asarray(cluster))
        if clusters.size == 0 or not np.issubdtype(clusters.dtype, np.integer):
            raise ValueError(
                f"cluster must be an int or an array of ints, got {cluster!r}."
            )
        bad = clusters[(clusters < 0) | (clusters >= self.n_clusters)]
        if bad.size:
            raise ValueError(
                f"cluster {bad[0]} does not exist: the model has clusters 0 to "
                f"{self.n_clusters - 1}."
            )
        return clusters.ravel()

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(256, max(16, n_samples // 32), n_samples)
        return min(self.batch_size, n_samples)

    def _apply(self, fn, X, elements_per_row):
        """``fn`` over X in batches on the model's device; numpy out.

        ``elements_per_row`` is the working memory one row needs, in floats.
        """
        rows = max(1, min(_INFERENCE_ROWS, _INFERENCE_ELEMENTS // max(1, elements_per_row)))
        return map_batches(fn, X, self.module_.device, rows, pad=True)

    def _clusters(self, X):
        """Most probable cluster of each row of validated ``X`` (an array or
        a tensor); numpy out."""
        return self._apply(lambda xb: self.module_.logits(xb).argmax(-1), X, X.shape[1])

    def _decode_latent(self, Z):
        return self._apply(self.module_.decoded_mean, Z, self.module_.n_features)


class _Stream:
    """Where a stream of :meth:`InfoCatVAE.partial_fit` calls stands: whether
    its chunks are guided, the seed its calls count on from, the calls so
    far (epochs, for a stream that continues a fit), and what guides them:
    the k-means centres of its first chunk, or, when ``follows_model``, the
    clusters the model gives each chunk."""

    # Streams pickled before this attribute existed started with partial_fit.
    follows_model = False

    def __init__(self, guided, seed, calls=0, centres=None, follows_model=False):
        self.guided, self.seed, self.calls, self.centres = guided, seed, calls, centres
        self.follows_model = follows_model


def training_seed(rng):
    """The seed a fit draws from ``rng`` (its ``random_state``) for the network,
    the start and the batches."""
    return int(rng.randint(np.iinfo(np.int32).max))


def _softmax(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _check_unit_interval(low, high):
    """``low`` and ``high``: the smallest and largest values of X."""
    if low < 0.0 or high > 1.0:
        raise ValueError(
            "The Bernoulli likelihood needs every value of X in [0, 1], but X "
            f"ranges from {low:g} to {high:g}. Scale X (e.g. MinMaxScaler, or "
            "pixels / 255) or use likelihood='gaussian'."
        )


def _check_float32_range(low, high, name):
    """The network computes in float32: larger float64 values would become inf."""
    limit = float(np.finfo(np.float32).max)
    if low < -limit or high > limit:
        raise ValueError(
            f"{name} has values from {low:g} to {high:g}, beyond the float32 range "
            f"(+-{limit:.3g}) the network computes in. Rescale {name} first, "
            "for example with StandardScaler."
        )


def _check_latent(Z, latent_dim):
    Z = check_array(Z, dtype=[np.float64, np.float32])
    _check_float32_range(Z.min(), Z.max(), "Z")
    if Z.shape[1] != latent_dim:
        raise ValueError(
            f"Z has {Z.shape[1]} features, but the latent space of this model "
            f"has n_clusters * subspace_dim = {latent_dim} dimensions."
        )
    return Z
