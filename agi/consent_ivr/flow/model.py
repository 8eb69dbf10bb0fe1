"""The validated, immutable flow model that the loader produces and the engine reads.

Nothing here parses YAML or touches the disk: a `Flow` is what remains once a flow file has been
loaded and every check has passed, so the engine can trust every field.
"""

from __future__ import annotations

from enum import StrEnum

from consent_ivr.records import Record


class Basis(StrEnum):
    """Legal basis of a purpose (GDPR Art. 6(1)(a) consent or (f) legitimate interest)."""

    CONSENT = "consent"
    LEGITIMATE_INTEREST = "legitimate_interest"


# The items a layered telephone notice can cover (REQUIREMENTS.md R9, WP260 §36/§38).
# Layer 1 must cover LAYER1_REQUIRED (plus recipients / third_country when a purpose has them);
# layer 1 and layer 2 together must cover FULL_NOTICE_REQUIRED.
LAYER1_REQUIRED: frozenset[str] = frozenset(
    {
        "controller",
        "purposes",
        "data",
        "rights",
        "objection",
        "voluntary",
        "withdrawal",
        "policy_pointer",
    }
)
LAYER1_CONDITIONAL: frozenset[str] = frozenset({"recipients", "third_country"})
FULL_NOTICE_REQUIRED: frozenset[str] = LAYER1_REQUIRED | frozenset(
    {"dpo", "legal_basis", "retention", "complaint"}
)
COVER_ITEMS: frozenset[str] = (
    LAYER1_REQUIRED
    | LAYER1_CONDITIONAL
    | FULL_NOTICE_REQUIRED
    | frozenset({"address", "processors", "transfer_safeguards", "automated_decisions"})
)

# A withdrawal flow (R17) must say who is responsible and what withdrawing means.
WITHDRAWAL_REQUIRED: frozenset[str] = frozenset({"controller", "withdrawal"})

#: Flow kinds: a consent flow asks for consent; a withdrawal flow records its withdrawal.
KINDS: tuple[str, ...] = ("consent", "withdrawal")

# Closing message kinds: one per consent status.
CLOSE_KINDS: tuple[str, ...] = ("granted", "declined", "partial", "none", "error")

DTMF_KEYS = "0123456789*#"


class Prompt(Record):
    """One thing the caller hears: the text per language and the audio file that speaks it.

    `id` is unique within the flow and names the audio file `sounds/<lang>/<flow>/<id>.wav`.
    `audio` maps language -> absolute path of the WAV file; `audio_sha256` its content hash;
    `samples` its length in 8 kHz samples. `audio_file` identifies the file that was hashed
    (inode, size, mtime in ns) and `audio_dir` its folder (inode, mtime in ns): a call checks
    them after each play, so that the hash in its evidence is the audio Asterisk played (R13,
    `flow.audiofiles`). A flow with more formats than the WAV (``sounds: formats:``) also has,
    per language, `format_sha256` (format -> hash of that file) and `format_files` ((path,
    identity) of each), checked alike: Asterisk may play any of them.
    """

    id: str
    text: dict[str, str]
    audio: dict[str, str]
    audio_sha256: dict[str, str]
    samples: dict[str, int]
    covers: frozenset[str] = frozenset()
    audio_file: dict[str, tuple[int, int, int]] = {}  # noqa: RUF012  (never mutated)
    audio_dir: dict[str, tuple[int, int]] = {}  # noqa: RUF012  (never mutated)
    format_sha256: dict[str, dict[str, str]] = {}  # noqa: RUF012  (never mutated)
    format_files: dict[str, tuple[tuple[str, tuple[int, int, int]], ...]] = {}  # noqa: RUF012


#: What a purpose does with the data (`kind:` in a flow). The linter's purpose rules (R4, R10,
#: R11, R16, R19) read it: `analytics` is the basic call statistics the tracking step records
#: on legitimate interest; `linkage` joins a call to a web visit (Google Analytics); `ads` uses
#: the data for advertising (GA4's ad_user_data), `personalization` for personalised ads
#: (ad_personalization); `profiling` builds profiles; `recording` records the call; `other` is
#: anything else.
PURPOSE_KINDS: tuple[str, ...] = (
    "analytics",
    "linkage",
    "ads",
    "personalization",
    "profiling",
    "recording",
    "other",
)
#: Kinds that need consent: never on legitimate interest (R4).
CONSENT_KINDS: frozenset[str] = frozenset(
    {"linkage", "ads", "personalization", "profiling", "recording"}
)


#: The tracking step's contract with the flows (`consent_ivr.tracking.step`): the consent
#: purpose whose grant opens the GA4 send, and the purposes whose grants set GA4's consent
#: fields (R16).
GA4_GATE_PURPOSE = "ga_linkage"
GA4_CONSENT_PURPOSES: dict[str, str] = {
    "ad_user_data": "ads_user_data",
    "ad_personalization": "ads_personalization",
}


def default_kind(purpose_id: str) -> str:
    """The kind of a purpose that declares none, read from its id (documented in the README)."""
    pid = purpose_id.lower()
    for part, kind in (
        ("record", "recording"),
        ("personali", "personalization"),
        ("profil", "profiling"),
        ("link", "linkage"),
        ("ads", "ads"),
        ("ad_", "ads"),
        ("analytic", "analytics"),
        ("statistic", "analytics"),
    ):
        if part in pid:
            return kind
    return "other"


class Purpose(Record):
    """A purpose of processing; only `consent` purposes are asked about (R10).

    `recipients` receive the data for their own purposes (e.g. Google); `processors` process it
    on the controller's behalf. `kinds` is what the flow declares (empty: derived from the id,
    see `default_kind`); more than one kind is a bundle (R11)."""

    id: str
    basis: Basis
    description: dict[str, str]
    recipients: tuple[str, ...] = ()
    third_countries: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    processors: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What the purpose does (its first declared kind, else the default for its id)."""
        return self.kinds[0] if self.kinds else default_kind(self.id)

    @property
    def variable(self) -> str:
        """The channel variable that carries this purpose's decision."""
        return "CONSENT_" + self.id.upper()


class Question(Record):
    """The consent question for one consent purpose."""

    purpose: str
    prompt: Prompt


class Keys(Record):
    """The keys of the choice. `repeat` and `full_notice` may be absent (None)."""

    accept: str = "1"
    decline: str = "2"
    repeat: str | None = "0"
    full_notice: str | None = "9"


class Caps(Record):
    """Bounds on prompting (R6): re-prompts after silence, after wrong keys, in total; replays."""

    noinput: int = 2
    nomatch: int = 2
    total: int = 3
    replays: int = 3
    early_accepts: int = 3


class Choice(Record):
    """How the 1/2 choice is collected."""

    keys: Keys
    timeout_ms: int
    caps: Caps
    noinput: tuple[Prompt, ...]
    nomatch: tuple[Prompt, ...]
    accept_during_notice: bool = False


#: The outcomes a returning caller's earlier decision may be honoured for (`returning.remember`).
REMEMBER_OUTCOMES: tuple[str, ...] = ("granted", "declined")


class Returning(Record):
    """Re-use of a caller's earlier decision across calls (R18: opt-in, bounded in age, the same
    notice only). `reminder` maps an outcome of `remember` to the short prompt played instead of
    the first layer (prompt ids ``reminder_granted``, ``reminder_declined``). `allow_recording`:
    the flow states that a `recording` purpose's decision may be re-used (R19; off by default)."""

    max_age_days: int
    remember: tuple[str, ...]
    reminder: dict[str, Prompt]
    allow_recording: bool = False


class Controller(Record):
    name: str
    contact: str


class Flow(Record):
    """A complete, validated consent flow."""

    id: str
    version: int
    notice_version: str
    languages: tuple[str, ...]
    controller: Controller
    policy_url: str
    purposes: tuple[Purpose, ...]
    notice: tuple[Prompt, ...]
    full_notice: tuple[Prompt, ...]
    choice: Choice
    questions: tuple[Question, ...]
    close: dict[str, Prompt]
    source_path: str
    source_sha256: str
    #: language -> SHA-256 of the notice document the caller hears (see the loader)
    notice_sha256: dict[str, str]
    #: "consent" (the question grants or declines) or "withdrawal" (the accept key confirms the
    #: withdrawal of the question's purpose; it never grants anything).
    kind: str = "consent"
    #: the formats every prompt is written in (``sounds: formats:``), the WAV first
    sound_formats: tuple[str, ...] = ("wav",)
    #: Returning callers (the optional `returning:` block); None: every call asks (the default).
    returning: Returning | None = None

    @property
    def is_withdrawal(self) -> bool:
        return self.kind == "withdrawal"

    @property
    def default_language(self) -> str:
        return self.languages[0]

    @property
    def label(self) -> str:
        """`<flow id>@<version>`, the value of CONSENT_FLOW."""
        return f"{self.id}@{self.version}"

    @property
    def consent_purposes(self) -> tuple[Purpose, ...]:
        return tuple(p for p in self.purposes if p.basis is Basis.CONSENT)

    def purpose(self, purpose_id: str) -> Purpose:
        for p in self.purposes:
            if p.id == purpose_id:
                return p
        raise KeyError(purpose_id)

    def match_language(self, requested: str | None) -> str | None:
        """The served language for `de`, `de_DE` or `de-DE`; None if the flow does not serve it."""
        if requested:
            req = requested.strip().lower().replace("-", "_")
            if req in self.languages:
                return req
            base = req.split("_", 1)[0]
            if base in self.languages:
                return base
        return None

    def select_language(self, requested: str | None) -> str:
        """The flow language for a channel language; the flow's default when it is not served."""
        return self.match_language(requested) or self.default_language

    def all_prompts(self) -> tuple[Prompt, ...]:
        """Every prompt of the flow, in a stable order."""
        return (
            self.notice
            + self.full_notice
            + tuple(q.prompt for q in self.questions)
            + self.choice.noinput
            + self.choice.nomatch
            + tuple(self.close[k] for k in CLOSE_KINDS if k in self.close)
            + self.reminders
        )

    @property
    def reminders(self) -> tuple[Prompt, ...]:
        """The reminder prompts of the `returning` block (none without it)."""
        if self.returning is None:
            return ()
        return tuple(
            self.returning.reminder[k] for k in REMEMBER_OUTCOMES if k in self.returning.reminder
        )
