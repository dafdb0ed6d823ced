"""Language detection and very common words, without a model.

The script decides most languages (kana → ja, Han → zh, Hangul → ko, …); Latin
and Cyrillic text is told apart by which small list of function words it hits
most. The same lists keep function words out of keywords and tags; for other
languages the extractive summarizer filters common words statistically.
"""

from __future__ import annotations

import re
from collections import Counter

from functions.summarizer.sentences import words

UNDETERMINED = "und"  # ISO 639-2 for "could not tell"

_STOPWORDS = {
    lang: frozenset(text.split())
    for lang, text in {
        "en": """a about above after again against all also am an and any are as at be because been before
        being below between both but by can could did do does doing down during each few for from further
        had has have having he her here hers herself him himself his how i if in into is it its itself just
        me more most my no nor not now of off on once only or other our ours out over own same she should so
        some such than that the their theirs them then there these they this those through to too under until
        up very was we were what when where which while who whom why will with would you your yours said says
        one two new also like many much get got may might must""",
        "de": """aber alle allem allen aller alles als also am an andere anderen auch auf aus bei bin bis bist da
        damit dann das dass dem den denn der des dessen die dies diese diesem diesen dieser dieses doch dort du
        durch ein eine einem einen einer eines er es etwas euch euer für gegen gewesen hat hatte hatten hier hin
        ich ihm ihn ihr ihre im in indem ins ist jede jedem jeden jeder jedes jetzt kann kein keine können man
        mehr mein mit muss nach nicht nichts noch nun nur ob oder ohne sehr sein seine sich sie sind so soll
        sondern sonst über um und uns unser unter viel vom von vor war waren was weil welche wenn wer werden wie
        wieder will wir wird wo zu zum zur zwar zwischen sagte sei wurde wurden worden bereits sowie etwa""",
        "fr": """a afin ai ainsi alors au aucun aussi autre aux avec avoir avait car ce ceci cela celle celui ces
        cet cette chaque comme comment dans de des donc dont du elle elles en encore entre est et été être eu fait
        faire il ils je la le les leur leurs lui ma mais me même mes moi mon ne ni nos notre nous on ont ou où par
        pas peu peut plus pour pourquoi quand que quel quelle qui sa sans se selon ses si son sont sous sur ta te
        tes toi ton tous tout toute toutes très tu un une vos votre vous était étaient depuis avant après""",
        "es": """a al algo algunos ante antes como con contra cual cuando de del desde donde durante e el ella ellas
        ellos en entre era es esa ese eso esta estaba este esto estos fue fueron ha hace hasta hay la las le les lo
        los más me mi muy nada ni no nos o otra otro para pero poco por porque que quien se sea ser si sido sin
        sobre son su sus también tanto te tiene todo todos tu un una uno unos y ya él""",
        "it": """a ad al alla alle anche che chi ci come con da dal dalla dei del della delle di dove e è ed era
        essere fa gli ha hanno i il in io la le lo ma mi ne nel nella noi non o per più quando quello questa
        questo se si sono su sua suo tra tutti un una uno stato stata""",
        "pt": """a ao aos as até com como da das de dela dele do dos e é ela ele eles em entre era essa esse esta
        este eu foi foram há isso já mais mas me mesmo muito na nas não no nos o os ou para pela pelo por quando
        que se sem ser seu sua são também tem um uma umas uns você""",
        "nl": """aan al als bij dat de den der deze die dit door een en er had heb hebben heeft het hij hoe hun ik
        in is je kan maar me meer met na naar niet nog nu of om omdat onder ons ook op over te tot u uit van veel
        voor was wat we werd wie wij wil worden zal ze zei zich zij zijn zo""",
        "ru": """а без более был была были было быть в вам вас весь во вот все всего всех вы где да даже для до его
        ее если есть еще же за здесь и из или им их к как когда кто ли либо между меня мне может мы на над надо
        наш не него нее нет ни них но ну о об однако он она они оно от очень по под при с со так также такой там
        те тем то того тоже той только том ты у уже хотя чего чем что чтобы эта эти это я""",
    }.items()
}

# Scripts that name their language outright, checked in this order.
_SCRIPTS = [
    ("ko", re.compile("[\uac00-\ud7af]")),
    ("ja", re.compile("[\u3040-\u30ff]")),
    ("zh", re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")),
    ("ar", re.compile("[\u0600-\u06ff]")),
    ("he", re.compile("[\u0590-\u05ff]")),
    ("el", re.compile("[\u0370-\u03ff]")),
    ("th", re.compile("[\u0e00-\u0e7f]")),
    ("hi", re.compile("[\u0900-\u097f]")),
]
_LETTER = re.compile(r"[^\W\d_]")
_SAMPLE_CHARS = 20_000


def detect_language(text: str) -> str:
    """An ISO 639-1 code, or ``"und"``."""
    sample = text[:_SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    if not letters:
        return UNDETERMINED
    counts = {lang: len(pattern.findall(sample)) for lang, pattern in _SCRIPTS}
    # Japanese mixes Han with kana; a little kana is enough to tell it from Chinese.
    if counts["ja"] > 0.05 * (counts["ja"] + counts["zh"]) and counts["ja"] + counts["zh"] > 0.3 * letters:
        return "ja"
    for lang, count in counts.items():
        if lang != "ja" and count > 0.3 * letters:
            return lang
    hits: Counter[str] = Counter()
    tokens = words(sample)
    for token in tokens:
        for lang, stop in _STOPWORDS.items():
            if token in stop:
                hits[lang] += 1
    if not hits:
        return UNDETERMINED
    lang, best = hits.most_common(1)[0]
    # Function words are a third or more of any running text in these languages;
    # a few stray hits ("i", "we" in Polish) are not enough.
    return lang if best >= max(2, 0.15 * len(tokens)) else UNDETERMINED


def stopwords(language: str) -> frozenset[str]:
    """Function words of ``language`` (empty when no list ships for it)."""
    return _STOPWORDS.get(language.split("-")[0].lower(), frozenset())


_HIRAGANA = re.compile("[\u3040-\u309f]")
_ZH_PARTICLES = frozenset("的了是在和也就不都而与着这那之于被把们我你他她它其")


def is_function_word(token: str, stop: frozenset[str]) -> bool:
    """A listed function word, or a CJK bigram holding grammar rather than content.

    Hiragana carries Japanese grammar (particles, endings) while content words are
    written in kanji and katakana; the listed characters are Chinese particles.
    """
    return token in stop or bool(_HIRAGANA.search(token)) or any(ch in _ZH_PARTICLES for ch in token)
