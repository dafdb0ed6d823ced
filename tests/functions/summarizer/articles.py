"""Article texts as readability hands them over: one paragraph per line."""

from __future__ import annotations

import random

ENGLISH_TITLE = "City council approves new bicycle lanes after long debate"
ENGLISH = """\
City council approves new bicycle lanes after long debate
The city council voted 7 to 2 on Tuesday to build forty kilometres of protected bicycle lanes across the downtown area, ending a debate that lasted more than two years.
The plan, proposed by Mayor Elena Ruiz, will replace parking spaces on six major streets with lanes separated from traffic by concrete barriers.
Supporters said the bicycle lanes would make cycling safer and cut traffic congestion. Dr. Amit Shah, a traffic engineer at the state university, said cities that built protected lanes saw cycling trips rise by 30 to 50 percent within three years.
Photo: City Hall
Business owners on Main Street opposed the plan. They argued that losing parking would drive customers to suburban malls, e.g. shoppers who visit by car on weekends.
The council added an amendment requiring a study of parking demand before construction starts on Main Street.
Construction of the bicycle lanes is expected to begin next spring and cost about 18.5 million dollars, most of it from a federal transport grant.
The first lanes will connect the central station with the university campus, a route used by thousands of students every day.
Council member J. P. Morgan, who voted against the plan, said the council had ignored the concerns of small businesses.
Cycling groups celebrated the vote outside City Hall and promised to monitor construction closely.
The mayor said the bicycle lanes were part of a broader plan to cut the city's carbon emissions in half by 2035.
"""

GERMAN_TITLE = "Stadt baut neue Radwege"
GERMAN = """\
Der Stadtrat hat am Dienstag beschlossen, in der Innenstadt vierzig Kilometer geschützte Radwege zu bauen.
Die Radwege sollen bis zum 3. Oktober nächsten Jahres fertig sein, wie Bürgermeisterin Dr. Elena Ruiz mitteilte.
Auf sechs großen Straßen werden dafür Parkplätze entfernt und durch Radwege mit Betonbarrieren ersetzt.
Befürworter erwarten, dass der Radverkehr sicherer wird und der Autoverkehr abnimmt. Studien zeigen z. B., dass der Radverkehr in solchen Städten um 30 bis 50 Prozent gestiegen ist.
Die Geschäftsleute in der Hauptstraße lehnen den Plan ab, weil sie Kunden verlieren könnten.
Der Stadtrat hat deshalb eine Untersuchung zum Parkbedarf in der Hauptstraße verlangt.
Die Kosten für die Radwege betragen rund 18,5 Millionen Euro, die größtenteils vom Bund kommen.
Die ersten Radwege verbinden den Hauptbahnhof mit der Universität, eine Strecke, die täglich Tausende Studierende nutzen.
Radfahrerverbände feierten die Entscheidung vor dem Rathaus.
Die Bürgermeisterin sagte, die Radwege seien Teil eines Plans, den Ausstoß von Kohlendioxid bis 2035 zu halbieren.
"""

FRENCH = """\
Le conseil municipal a approuvé mardi la construction de quarante kilomètres de pistes cyclables protégées dans le centre-ville.
Le projet, présenté par la maire Elena Ruiz, remplacera des places de stationnement sur six grandes rues par des pistes séparées de la circulation.
Selon les partisans du projet, les pistes cyclables rendront le vélo plus sûr et réduiront les embouteillages.
Les commerçants de la rue principale s'opposent au projet, car ils craignent de perdre des clients.
Le conseil a demandé une étude sur le stationnement avant le début des travaux dans la rue principale.
Les travaux des pistes cyclables commenceront au printemps et coûteront environ 18,5 millions d'euros.
Les premières pistes relieront la gare centrale à l'université, un trajet emprunté chaque jour par des milliers d'étudiants.
Les associations de cyclistes ont célébré le vote devant l'hôtel de ville.
"""

CHINESE = """\
市议会周二投票通过了在市中心修建四十公里受保护自行车道的计划。
这项计划由市长提出，将把六条主要街道上的停车位改建为自行车道，并用混凝土隔离带与机动车道分开。
支持者认为，自行车道将使骑行更加安全，并缓解交通拥堵。
研究显示，修建受保护自行车道的城市，骑行人数在三年内增加了三成到五成。
主街上的商户反对这项计划，他们担心失去停车位会让顾客流失。
市议会因此要求在主街施工之前先进行停车需求研究。
自行车道工程预计明年春天开工，总投资约一千八百五十万元，大部分来自联邦交通拨款。
第一批自行车道将连接中央车站和大学校园，每天有数千名学生使用这条路线。
骑行团体在市政厅外庆祝投票结果。
"""

JAPANESE = """\
市議会は火曜日、市中心部に四十キロの保護された自転車レーンを建設する計画を承認した。
この計画は市長が提案したもので、六つの主要な通りの駐車スペースを自転車レーンに置き換える。
支持者は、自転車レーンによって自転車の安全性が高まり、交通渋滞が緩和されると述べた。
一方、メインストリートの商店主たちは、駐車場がなくなると客が減ると反対している。
市議会は工事の前に駐車需要の調査を行うよう求めた。
自転車レーンの工事は来年春に始まり、費用は約十八億円の見込みだ。
最初の自転車レーンは中央駅と大学を結び、毎日数千人の学生が利用する。
"""

_VOCABULARY = (
    "river harbour bridge council budget museum railway festival teacher market farmer weather "
    "library hospital engineer program village forest station tunnel"
).split()


def long_article(words: int, seed: int = 7) -> str:
    """A deterministic English article of about ``words`` words, one paragraph per six sentences."""
    rng = random.Random(seed)
    paragraphs, sentences, count = [], [], 0
    while count < words:
        chosen = rng.sample(_VOCABULARY, 4)
        sentence = (
            f"The {chosen[0]} near the {chosen[1]} was discussed by the {chosen[2]} "
            f"while the {chosen[3]} waited for news about item {count}."
        )
        sentences.append(sentence)
        count += len(sentence.split())
        if len(sentences) == 6:
            paragraphs.append(" ".join(sentences))
            sentences = []
    paragraphs.append(" ".join(sentences))
    return "\n".join(p for p in paragraphs if p)
