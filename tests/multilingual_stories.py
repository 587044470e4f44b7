"""Well-formed short stories written by hand in six languages, as story.json data.

Each is what a model behind a server writes in that language: purposes and summaries that end
with the language's own full stop or without one (Japanese, Chinese, Russian and Arabic purposes
often do), names in the language's own script, German nouns capitalised. The text rules must
accept them: no cut-off, unpunctuated, name or premise-coverage false alarm.
"""

from __future__ import annotations

from typing import Any


def _story(
    premise: str,
    title: str,
    beats: list[tuple[str, str, int]],
    cast: list[tuple[str, str, str, str]],
    setting: str,
    scenes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "premise": premise,
        "plot": {
            "structure_type": "three-act",
            "title": title,
            "beats": [{"name": n, "purpose": p, "tension": t} for n, p, t in beats],
            "characters": [c[0] for c in cast],
        },
        "bible": {
            "characters": [{"name": n, "role": r, "description": d, "pronouns": p} for n, r, d, p in cast],
            "setting": setting,
            "facts": [],
        },
        "scenes": [
            {
                "scene": {
                    "title": s["title"],
                    "setting": s["setting"],
                    "summary": s["summary"],
                    "characters": s["characters"],
                    "beat": beats[i][0],
                },
                "dialogue": {"lines": [{"speaker": a, "text": b} for a, b in s["lines"]]},
                "prose": s["prose"],
            }
            for i, s in enumerate(scenes)
        ],
    }


JAPANESE = _story(
    "灯台守の美咲は、未来の自分が書いた瓶の中の手紙を見つける。",
    "未来からの手紙",
    [
        ("嵐の前", "美咲が灯台で静かな日々を送っていることを示す", 2),
        ("瓶の手紙", "美咲が浜辺で瓶を拾い、自分の筆跡の手紙を読む", 8),
        ("夜明け", "美咲が手紙の警告を信じて船を救う。", 4),
    ],
    [
        ("美咲", "灯台守", "海辺の灯台をひとりで守る女性。", "she/her"),
        ("健太", "漁師", "美咲の幼なじみで、毎朝港に来る。", "he/him"),
    ],
    "北の海に面した小さな灯台",
    [
        {
            "title": "浜辺の瓶",
            "setting": "嵐のあとの浜辺、早朝",
            "summary": "美咲は浜辺で古い瓶を見つけ、中の手紙が自分の字で書かれていることに気づく",
            "characters": ["美咲", "健太"],
            "lines": [
                ("美咲", "この字、私の字だわ。"),
                ("健太", "そんなはずはない。誰かのいたずらだろう？"),
            ],
            "prose": (
                "嵐が去った朝、美咲は浜辺を歩いていた。波打ち際に緑色の瓶が光っている。"
                "拾い上げて栓を抜くと、中から一枚の手紙が出てきた。そこには自分の筆跡で、"
                "三日後の夜に灯台の灯を絶やすなと書かれていた。"
            ),
        }
    ],
)

CHINESE = _story(
    "灯塔看守人林梅发现了一个漂流瓶，里面是未来的自己写的信。",
    "来自未来的信",
    [
        ("平静的日子", "林梅在灯塔上过着安静的生活", 2),
        ("漂流瓶", "林梅捡到漂流瓶，读到自己笔迹的信", 8),
        ("黎明", "林梅相信信中的警告，救下了渔船。", 4),
    ],
    [
        ("林梅", "灯塔看守人", "独自守护海边灯塔的女人。", "she/her"),
        ("王强", "渔夫", "林梅的老朋友，每天早上出海。", "he/him"),
    ],
    "北方海边的一座小灯塔",
    [
        {
            "title": "海滩上的瓶子",
            "setting": "暴风雨后的海滩，清晨",
            "summary": "林梅在海滩上捡到一个旧瓶子，发现里面的信是她自己写的",
            "characters": ["林梅", "王强"],
            "lines": [
                ("林梅", "这是我的笔迹！"),
                ("王强", "怎么可能？一定是有人开玩笑。"),
            ],
            "prose": (
                "暴风雨过后的清晨，林梅沿着海滩散步。浪花里有一个绿色的漂流瓶在闪光。"
                "她拔开瓶塞，取出一封信。信上是她自己的笔迹，写着三天后的夜里不要让灯塔熄灭。"
            ),
        }
    ],
)

RUSSIAN = _story(
    "Смотритель маяка Анна находит в бутылке письмо, написанное её собственным почерком.",
    "Письмо из будущего",
    [
        ("Тихие дни", "Анна живёт одна на маяке и следит за огнём", 2),
        ("Бутылка", "Анна находит бутылку и читает письмо, написанное её почерком", 8),
        ("Рассвет", "Анна верит письму и спасает рыбацкую лодку.", 4),
    ],
    [
        ("Анна", "смотритель маяка", "Женщина, которая одна держит огонь маяка.", "she/her"),
        ("Пётр Иванов", "рыбак", "Старый друг Анны, каждое утро выходит в море.", "he/him"),
    ],
    "Маленький маяк на северном берегу",
    [
        {
            "title": "Бутылка на берегу",
            "setting": "Берег после шторма, раннее утро",
            "summary": "Анна находит на берегу старую бутылку, а в ней письмо её почерком",
            "characters": ["Анна", "Пётр Иванов"],
            "lines": [
                ("Анна", "Это же мой почерк!"),
                ("Пётр Иванов", "Не может быть. Кто-то над тобой шутит."),
            ],
            "prose": (
                "Утром после шторма Анна шла вдоль берега. В пене блеснула зелёная бутылка. "
                "Анна вытащила пробку и развернула письмо. Оно было написано её почерком и "
                "просило не гасить огонь маяка через три ночи."
            ),
        }
    ],
)

ARABIC = _story(
    "تجد حارسة المنارة ليلى رسالة في زجاجة كتبتها بخط يدها في المستقبل.",
    "رسالة من المستقبل",
    [
        ("أيام هادئة", "تعيش ليلى وحدها في المنارة وتحرس النور", 2),
        ("الزجاجة", "تجد ليلى زجاجة وتقرأ رسالة بخط يدها", 8),
        ("الفجر", "تصدق ليلى الرسالة وتنقذ قارب الصيد.", 4),
    ],
    [
        ("ليلى", "حارسة المنارة", "امرأة تحرس نور المنارة وحدها.", "she/her"),
        ("عمر", "صياد", "صديق ليلى القديم، يخرج إلى البحر كل صباح.", "he/him"),
    ],
    "منارة صغيرة على الشاطئ الشمالي",
    [
        {
            "title": "زجاجة على الشاطئ",
            "setting": "الشاطئ بعد العاصفة، في الصباح الباكر",
            "summary": "تجد ليلى زجاجة قديمة على الشاطئ وفيها رسالة بخط يدها",
            "characters": ["ليلى", "عمر"],
            "lines": [
                ("ليلى", "هذا خطي أنا!"),
                ("عمر", "مستحيل. لا بد أن أحدًا يمزح معك؟"),
            ],
            "prose": (
                "في صباح ما بعد العاصفة كانت ليلى تمشي على الشاطئ. لمعت زجاجة خضراء بين الأمواج. "
                "فتحت ليلى الزجاجة وأخرجت رسالة مكتوبة بخط يدها، تطلب منها ألا تطفئ نور المنارة "
                "بعد ثلاث ليال."
            ),
        }
    ],
)

GERMAN = _story(
    "Die Leuchtturmwärterin Greta findet eine Flaschenpost, die ihr zukünftiges Ich geschrieben hat.",
    "Der Brief aus der Zukunft",
    [
        ("Stille Tage", "Greta hütet allein das Licht des Leuchtturms.", 2),
        ("Die Flasche", "Greta findet die Flasche und liest einen Brief in ihrer eigenen Handschrift.", 8),
        ("Morgengrauen", "Greta glaubt dem Brief und rettet das Fischerboot.", 4),
    ],
    [
        ("Greta", "Leuchtturmwärterin", "Eine Frau, die das Licht allein hütet.", "she/her"),
        ("Jonas Weber", "Fischer", "Gretas alter Freund, der jeden Morgen hinausfährt.", "he/him"),
    ],
    "Ein kleiner Leuchtturm an der Nordseeküste",
    [
        {
            "title": "Die Flasche am Strand",
            "setting": "Der Strand nach dem Sturm, früh am Morgen",
            "summary": "Greta findet am Strand eine alte Flasche mit einem Brief in ihrer Handschrift.",
            "characters": ["Greta", "Jonas Weber"],
            "lines": [
                ("Greta", "Das ist meine Handschrift!"),
                ("Jonas Weber", "Unmöglich. Da erlaubt sich jemand einen Scherz mit dir."),
            ],
            "prose": (
                "Am Morgen nach dem Sturm ging Greta am Strand entlang. In der Brandung glänzte eine "
                "grüne Flasche. Sie zog den Korken heraus und entrollte den Brief. Er war in ihrer "
                "eigenen Handschrift geschrieben und bat sie, in drei Nächten das Licht nicht "
                "ausgehen zu lassen. Der Wind zerrte an ihrem Mantel, und die Möwen schrien über "
                "den Felsen."
            ),
        }
    ],
)

SPANISH = _story(
    "La farera Lucía encuentra un mensaje en una botella escrito por su yo del futuro.",
    "La carta del futuro",
    [
        ("Días tranquilos", "Lucía cuida sola la luz del faro.", 2),
        ("La botella", "Lucía encuentra la botella y lee una carta con su propia letra.", 8),
        ("El amanecer", "Lucía cree en la carta y salva la barca de pesca.", 4),
    ],
    [
        ("Lucía", "la farera", "Una mujer que cuida sola la luz del faro.", "she/her"),
        ("Mateo Ruiz", "pescador", "Viejo amigo de Lucía que sale al mar cada mañana.", "he/him"),
    ],
    "Un pequeño faro en la costa norte",
    [
        {
            "title": "La botella en la playa",
            "setting": "La playa después de la tormenta, al amanecer",
            "summary": "Lucía encuentra en la playa una botella vieja con una carta escrita con su letra.",
            "characters": ["Lucía", "Mateo Ruiz"],
            "lines": [
                ("Lucía", "¡Es mi letra!"),
                ("Mateo Ruiz", "¿Cómo va a ser tu letra? Alguien te está gastando una broma."),
            ],
            "prose": (
                "La mañana después de la tormenta, Lucía caminaba por la playa. Entre las olas "
                "brillaba una botella verde. Sacó el corcho y desenrolló la carta. Estaba escrita "
                "con su propia letra y le pedía que dentro de tres noches no dejara apagar la luz "
                "del faro."
            ),
        }
    ],
)

STORIES = {
    "ja": JAPANESE,
    "zh": CHINESE,
    "ru": RUSSIAN,
    "ar": ARABIC,
    "de": GERMAN,
    "es": SPANISH,
}
